from setuptools import find_packages, setup

setup(
    name="bert4x",
    version="0.1.0",
    description="Chinese NLP toolkit on Keras 3 in the bert4keras lineage",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bert4x", "bert4x.*", "tasks", "tasks.*", "pretrained",
                                    "pretrained.*"]),
    include_package_data=True,
    package_data={"pretrained": ["*.md", "vocab/*", "data/*/*", "roformer_zh_tiny/*"],
                  "tasks": ["page.html"], "tasks.triple_extraction": ["data/*"]},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.10",
        "numpy",
        "datasets>=2.19",
        "jieba",
        "tokenizers",
        "safetensors",
        "tqdm",
        "matplotlib",
        "scipy",
    ],
    extras_require={
        # torch<=2.13.0: the CPU build; newer releases pull multi-GB CUDA wheels by default.
        "test": ["pytest", "pytest-xdist", "hypothesis", "torch>=2.1,<=2.13.0", "transformers>=4.40",
                 "sentence-transformers", "jax[cpu]>=0.4.30,<=0.10.2", "rouge", "nltk",
                 "tf2onnx", "onnxruntime", "tensorflow-text", "fastapi", "uvicorn[standard]",
                 "prometheus-client", "httpx", "selenium", "aiohttp", "mkdocs",
                 "mkdocstrings-python", "snownlp", "sentencepiece"],
        # What the ported bert4keras examples import beyond bert4x (the seq2seq metrics).
        "examples": ["rouge", "nltk"],
        # The JAX backend (KERAS_BACKEND=jax); 0.10.2 is the last release for Python 3.11.
        "jax": ["jax[cpu]>=0.4.30,<=0.10.2"],
        # The PyTorch backend (KERAS_BACKEND=torch), the CPU build as for the tests.
        "torch": ["torch>=2.1,<=2.13.0"],
        # bert4x export: ONNX conversion and its runtime; TF Text for the raw-text signature.
        "export": ["tf2onnx", "onnxruntime", "tensorflow-text"],
        # bert4x serve: the ASGI stack (uvloop and httptools with [standard]) and Prometheus
        # metrics; aiohttp is benchmarks/serve_load.py's client.
        "serve": ["fastapi", "uvicorn[standard]", "prometheus-client", "aiohttp"],
        # The documentation site (mkdocs build / mkdocs serve; mkdocs.yml).
        "docs": ["mkdocs", "mkdocstrings-python"],
        # SpTokenizer: the SentencePiece models of T5, mT5 and ALBERT releases.
        "sentencepiece": ["sentencepiece"],
        # The MLM corpus behind pretrained/roformer_zh_tiny (python -m pretrained.pretrain).
        "pretrain": ["snownlp"],
    },
    entry_points={"console_scripts": ["bert4x=bert4x.cli:main"]},
)
