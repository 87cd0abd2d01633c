"""KgCLUE question answering: UniLM seq2seq generates ``subject [SEP] predicate [SEP] sense
[SEP]`` under a prefix-tree constraint over the knowledge base, and the object is read from it.

``data`` reads questions and KB files, ``kb`` indexes the KB in a :class:`bert4x.generation.Trie`,
``metrics`` is the official EM/F1, ``task`` trains and answers, ``cli`` is ``bert4x kgclue``.
"""
