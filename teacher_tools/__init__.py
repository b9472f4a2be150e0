"""The teacher's tools, run on the teacher's own computer: `classcam keys`, `classcam account`
and `classcam decrypt`. Installable alone (distribution `classcam-teacher`), without the daemon
and without anything POSIX-only."""

__version__ = "0.1.0"
