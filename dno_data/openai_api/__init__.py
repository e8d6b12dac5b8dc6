"""Calls to OpenAI-compatible chat servers, shared by judges, teachers and the `openai` sampling backend.

  runner.py      the async call runner: concurrency, rate limits, retries, the cache; `answer_all`
                 for callers that need every answer
  call_cache.py  the persistent call cache (SQLite), safe for concurrent processes
  costs.py       token prices (prices.json) and cost estimates
"""
