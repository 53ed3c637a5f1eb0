-- Schema version 1: hosts, leases, events.
-- Released: never edit this file. A schema change is a new file, the next number.
-- netbootd/store/sqlite.py drops the comment lines, splits the rest on semicolons
-- and runs it in one transaction that also sets PRAGMA user_version.

    CREATE TABLE hosts (
        mac TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        arch INTEGER,
        vendor_class TEXT,
        uuid TEXT,
        hostname TEXT,
        interface TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE leases (
        address TEXT PRIMARY KEY,
        network TEXT NOT NULL,
        client_key BLOB NOT NULL,
        mac TEXT NOT NULL,
        hostname TEXT,
        state TEXT NOT NULL,
        starts REAL NOT NULL,
        ends REAL NOT NULL
    );
    CREATE INDEX leases_mac ON leases(mac);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        mac TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_mac ON events(mac, id);
    