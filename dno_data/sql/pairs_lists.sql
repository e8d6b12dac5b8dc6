-- The two list columns of pairs, TRL's conversational preference form of chosen_text and
-- rejected_text ([{role: assistant, content: ...}]), added to the rows of assemble_pairs.sql as the
-- last step: `dno pairs` sorts the rows first, so the sort does not move every text twice (the paper
-- rule at 1M prompts x 6, 5.85M pairs: the final COPY took 18.4 s instead of 22.0 s).
-- The placeholder after FROM is replaced by those rows (in the order they are to be written).
SELECT *,
       [{'role': 'assistant', 'content': chosen_text}] AS chosen,
       [{'role': 'assistant', 'content': rejected_text}] AS rejected
FROM $rows
