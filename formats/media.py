"""Facts about the recorded media that the unit writes and the teacher's tools read."""
from __future__ import annotations

from fractions import Fraction

# Every segment's timestamps sit on one timeline that starts here. AAC's first (priming) packet
# has a negative time, and a muxer shifts a file whose times go below zero; shifting only the
# first segment would break the join between it and the second (DESIGN: "timestamps continuous").
TIMELINE_START = Fraction(1)
