"""The HTTP service (``zsgen serve``) and its prompt playground: the pipeline behind FastAPI, for online use.

Optional: needs the ``zsgen[serve]`` extra (FastAPI and uvicorn).
"""
