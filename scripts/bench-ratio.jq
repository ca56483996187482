# The 3-node target's line of docs/benchmarks.md (jq -s over `sockmesh bench --json` lines):
# the median max(cross) of the 3-node cluster over the median max(fanout) of one node.
def med: sort | .[(length - 1) / 2 | floor];
def maxes($lbl; $of): [ .[] | select(.summary == true and .label == $lbl and .of == $of) | .max_delivered_per_s ];
(maxes("sockmesh-1node"; "fanout")) as $one
| (maxes("sockmesh-3nodes"; "cross")) as $three
| if ($one | length) == 0 or ($three | length) == 0 then "(no 3-node ratio: a ramp is missing)"
  else "**3 nodes on one core / one node** (medians of max(cross) and max(fanout)): "
    + "\($three | med | round) / \($one | med | round) = **\(($three | med) * 10000 / ($one | med) | round / 100) %**"
  end
