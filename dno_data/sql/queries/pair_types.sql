-- Pair types per iteration (the DNO paper's Table 2 view): teacher>policy, policy>teacher, policy>policy counts and shares of the new pairs.
-- Replayed pairs (replayed_from set) come from earlier iterations: counted apart, not in the shares.
WITH p AS (
    SELECT iteration, pair_type, replayed_from IS NOT NULL AS replayed FROM pairs
)
SELECT iteration,
       count(*) FILTER (WHERE NOT replayed) AS new_pairs,
       count(*) FILTER (WHERE NOT replayed AND pair_type = 'teacher>policy') AS teacher_gt_policy,
       count(*) FILTER (WHERE NOT replayed AND pair_type = 'policy>teacher') AS policy_gt_teacher,
       count(*) FILTER (WHERE NOT replayed AND pair_type = 'policy>policy') AS policy_gt_policy,
       round(100.0 * count(*) FILTER (WHERE NOT replayed AND pair_type = 'teacher>policy')
             / nullif(count(*) FILTER (WHERE NOT replayed), 0), 1) AS teacher_gt_policy_pct,
       round(100.0 * count(*) FILTER (WHERE NOT replayed AND pair_type = 'policy>teacher')
             / nullif(count(*) FILTER (WHERE NOT replayed), 0), 1) AS policy_gt_teacher_pct,
       round(100.0 * count(*) FILTER (WHERE NOT replayed AND pair_type = 'policy>policy')
             / nullif(count(*) FILTER (WHERE NOT replayed), 0), 1) AS policy_gt_policy_pct,
       count(*) FILTER (WHERE replayed) AS replayed_pairs
FROM p
GROUP BY iteration
ORDER BY iteration
