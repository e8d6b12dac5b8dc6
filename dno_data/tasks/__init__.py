"""Built-in tasks with verifiable answers; each module's `oracle` is registered in dno_data.judges.oracles.

  addition      the demo's toy task: tokenizer, tiny model, initial SFT, graded addition check
  constraints   instruction following under constraints checked by code (IFEval-style)
"""
