-- Schema version 3: accounts, enrollment tokens, host identity and agent
-- credential, inventory history (issue 11).
-- Released: never edit this file. A schema change is a new file, the next number.

    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        approval TEXT NOT NULL,
        profile TEXT,
        profile_args TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        hash TEXT NOT NULL,
        label TEXT,
        created REAL NOT NULL,
        expires INTEGER,
        max_uses INTEGER,
        uses INTEGER NOT NULL DEFAULT 0,
        revoked REAL
    );
    CREATE TABLE inventory (
        id INTEGER PRIMARY KEY,
        mac TEXT NOT NULL,
        ts REAL NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX inventory_mac ON inventory(mac, id);
    ALTER TABLE hosts ADD COLUMN account TEXT;
    ALTER TABLE hosts ADD COLUMN ids TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE hosts ADD COLUMN secret_hash TEXT;
    ALTER TABLE hosts ADD COLUMN agent_addr TEXT;
    ALTER TABLE hosts ADD COLUMN action TEXT;
    ALTER TABLE hosts ADD COLUMN hw TEXT;
