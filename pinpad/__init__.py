"""classcam-pinpad: the PIN pad service. It reads a USB numeric keypad (grabbed, so no other
process sees a keystroke), holds the teachers' cards and, for teachers without a security key,
their signing keys sealed under their PINs, and sends start tokens to the unit over the local
link. It runs as its own user: the daemon never sees a PIN or a teacher's key.

Imports: formats, teacher_tools (enrolment reads a teacher's key file); never appliance (the
daemon's room) nor hwsim."""
