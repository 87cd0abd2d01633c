"""bert4keras' argument names on our layers, so its layer calls run unchanged.

A layer decorated with :func:`accepts_bert4keras_names` takes either spelling; ``get_config``
writes ours. Giving both spellings is an error rather than a silent choice.
"""

import functools
import inspect


def accepts_bert4keras_names(**renamed):
    """Class decorator: ``__init__`` also accepts each bert4keras name (key) for our argument
    (value)."""
    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            for theirs, ours in renamed.items():
                if theirs in kwargs:
                    if ours in kwargs:
                        raise TypeError(f"{cls.__name__}: give {ours}= or its bert4keras name "
                                        f"{theirs}=, not both")
                    kwargs[ours] = kwargs.pop(theirs)
            init(self, *args, **kwargs)

        # Keras reads the constructor's signature to record its arguments: show it ours.
        __init__.__signature__ = inspect.signature(init)
        cls.__init__ = __init__
        return cls
    return decorate
