"""How many users are recommended for at once: here, through batch files, or on a Ray cluster.

* :mod:`.bulk` — a users file through :meth:`zsgen.Recommender.recommend_batch` here, resumable after a kill;
* :mod:`.batch` — an evaluation's or a users file's LLM requests as batch files, and their answers read back;
* :mod:`.ray` — the same on a Ray cluster with Ray Data (cluster set-up, bulk recommendation, evaluation, the HTTP
  stage, catalog embedding); needs the ``ray`` extra and imports Ray only when called.

Every engine runs the online pipeline itself (:class:`zsgen.Recommender`, the reranker), so a user's line is the same
whichever engine wrote it. The CLI parses arguments and calls these functions; nothing here reads an argparse
namespace.
"""
