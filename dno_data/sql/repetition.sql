-- Repetition check (the paper: a sample with heavily repeated n-grams is an automatic negative): the
-- samples whose repetition ratio (the fraction of its word 3-grams that repeat an earlier one,
-- dno_data/repetition.py) is over $max_repetition. The ratio is the one each sample carries, measured
-- when it was written; a sample without one (a samples file made elsewhere) has it in `measured`.
-- `dno pairs` skips this entirely when --max-repetition >= 1 (the ratio is always < 1).
-- Views: samples, measured(sample_id, repetition). Parameter: $max_repetition.
SELECT sample_id, true AS repetitive FROM samples WHERE repetition > $max_repetition
UNION ALL
SELECT sample_id, true AS repetitive FROM measured WHERE repetition > $max_repetition
