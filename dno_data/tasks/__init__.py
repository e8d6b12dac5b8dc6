"""Built-in tasks with verifiable answers; each module's `oracle` is registered in dno_data.judges.oracles.

  addition      the demo's toy task: tokenizer, tiny model, initial SFT, graded addition check
  constraints   instruction following under constraints checked by code (IFEval-style)
  partial_sums  3-digit sums graded digit by digit with no gold answer: the best samples are good but
                flawed, so the information is in the difference between chosen and rejected
"""
