#!/usr/bin/env python3
"""Fills a Portcullis store for benches/scale.sh, fast: bulk inserts, not the CLI.

    scale_fill.py STORE USERS SESSIONS REMEMBER EVENTS PASSWORD_HASH TOKENS_FILE

STORE is a SQLite file or a postgres:// URL (filled with COPY through psql); it must already
hold the schema (any `portcullis` command on the config makes it). Users are
user<N>@example.com, all with PASSWORD_HASH (hashing a million passwords would take hours);
session N belongs to user N mod USERS, is live (last seen now) and its cookie value is line N
of TOKENS_FILE; remember-me tokens and events are spread over the users, events one every
3 seconds back from now, from addresses 10.x.y.z, each with its address key.
"""
import base64
import hashlib
import os
import sqlite3
import subprocess
import sys
import time


def token():
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def login(n):
    return f"user{n}@example.com"


def tables(users, sessions, remember, events, password_hash, tokens_out):
    """(table, columns, rows) in insertion order; rows are generated lazily."""
    now = int(time.time())

    def user_rows():
        for n in range(users):
            yield (n + 1, login(n), login(n), login(n), login(n), f"User {n}", '["staff"]',
                   password_hash, now)

    def session_rows():
        for n in range(sessions):
            t = token()
            tokens_out.write(t + "\n")
            yield (hashlib.sha256(t.encode()).digest(), n % users + 1, now, now, "10.0.0.1", "scale")

    def remember_rows():
        for n in range(remember):
            yield (token()[:22], os.urandom(32), n % users + 1, now + 30 * 86400)

    kinds = ["login_success", "login_failure", "logout", "ip_denied", "session_expired"]

    def event_rows():
        for i in range(events):
            a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
            key = bytes(10) + b"\xff\xff" + bytes([10, a, b, c])
            yield (now - (events - i) * 3, kinds[i % 5], login(i % users), f"10.{a}.{b}.{c}",
                   "Mozilla/5.0", key)

    return [
        ("users", "id, login, login_key, email, email_key, name, groups, password_hash, created_at",
         user_rows()),
        ("sessions", "id_hash, user_id, created_at, last_seen, ip, user_agent", session_rows()),
        ("remember_tokens", "selector, validator_hash, user_id, expires_at", remember_rows()),
        ("events", "ts, event, login, ip, user_agent, ip_key", event_rows()),
    ]


def fill_sqlite(path, content):
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    for table, columns, rows in content:
        marks = ", ".join("?" for _ in columns.split(","))
        con.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def csv_field(value):
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def fill_postgres(url, content):
    for table, columns, rows in content:
        copy = subprocess.Popen(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
             f"\\copy {table} ({columns}) FROM STDIN WITH (FORMAT csv)"],
            stdin=subprocess.PIPE, text=True)
        for row in rows:
            copy.stdin.write(",".join(csv_field(v) for v in row) + "\n")
        copy.stdin.close()
        if copy.wait() != 0:
            sys.exit(f"scale_fill: COPY into {table} failed")
    # Ids were given: the sequence must start after them, or the next new user collides.
    subprocess.run(["psql", "-q", url, "-c",
                    "SELECT setval('users_id_seq', (SELECT max(id) FROM users)); ANALYZE"],
                   check=True, stdout=subprocess.DEVNULL)


def main():
    store, users, sessions, remember, events, password_hash, tokens_file = sys.argv[1:8]
    users, sessions, remember, events = int(users), int(sessions), int(remember), int(events)
    started = time.time()
    with open(tokens_file, "w") as tokens_out:
        content = tables(users, sessions, remember, events, password_hash, tokens_out)
        if store.startswith("postgres://") or store.startswith("postgresql://"):
            fill_postgres(store, content)
        else:
            fill_sqlite(store, content)
    print(f"filled {users} users, {sessions} sessions, {remember} remember-me tokens, "
          f"{events} events in {time.time() - started:.0f} s")


main()
