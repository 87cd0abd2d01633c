"""CoSENT sentence vectors (and the Sentence-BERT baseline) on any bert4x backbone.

``data`` reads pair and NLI files, ``model`` builds the encoder, the CoSENT loss and the two
training heads, ``vectors`` turns texts into normalised vectors and searches them, ``task`` ties
them to the training loop and ``cli`` is ``bert4x cosent``.
"""
