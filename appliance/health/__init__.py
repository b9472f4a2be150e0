"""Device health for IT: what the unit says about itself, and only on a fixed clock (P9).

    report.py     the health message: fixed fields, fixed size, nothing about who or when
    schedule.py   the fixed period (jittered per unit) every health event keeps to
    checks.py     camera, microphone, speaker, LED, clock, server, storage, software
    journal.py    the journal: journald fields via systemd-python, lines released on the period
    notify.py     READY / STATUS / WATCHDOG via systemd.daemon.notify
    publisher.py  retained health over MQTT v5 (paho-mqtt), with the last will `offline`
    service.py    the daemon's health loop: probe, checks, publish, journal, on each tick
    fleet.py      `classcam fleet`: IT's one line per unit
    doctor.py     `classcam doctor`: the checks on demand, with the fix for each
"""
