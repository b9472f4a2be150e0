"""What the unit and the teacher's tools share: the formats of the files that pass between them
(the manifest, the teacher card, the text forms of keys, the id rules, the recorded media's
timeline) and durable file writes. It imports nothing of the daemon and nothing POSIX-only, so
it installs on the teacher's own computer (Windows, macOS or Linux) with `classcam-teacher`."""
