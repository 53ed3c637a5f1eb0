-- Schema version 5: networks as objects (issue 14). One row per network: its
-- definition as JSON (policy/vnet.py Vnet.to_doc: type, subnet, ranges, leases,
-- interface, relays, options, policy), where it came from ('config': seeded and
-- reconciled from [[networks]] at start; 'api': created by an admin), when.
-- Leases given out stay in the leases table, keyed by address.
-- Released: never edit this file. A schema change is a new file, the next number.

    CREATE TABLE networks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        origin TEXT NOT NULL,
        doc TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
