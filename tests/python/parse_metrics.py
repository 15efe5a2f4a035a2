"""Parse a Prometheus text exposition (stdin) with prometheus_client's own
parser, as a Prometheus server would read /metrics, and print it plainly:
`family NAME TYPE` per metric family, then `sample NAME LABELS VALUE` per
sample (LABELS sorted k=v joined by commas, `-` when none)."""

import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    print("family", family.name, family.type)
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "-"
        print("sample", s.name, labels, repr(float(s.value)))
