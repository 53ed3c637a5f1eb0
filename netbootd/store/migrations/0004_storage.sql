-- Schema version 4: iSCSI exports (issue 13). One row per exported volume: the
-- host it is exported to, that host's initiator IQN, the target IQN and the CHAP
-- credentials. The secrets live only here (the database is 0600) and in the
-- host's own boot script. Volumes themselves are not stored: the pools list them.
-- Released: never edit this file. A schema change is a new file, the next number.

    CREATE TABLE exports (
        volume TEXT PRIMARY KEY,
        pool TEXT NOT NULL,
        mac TEXT NOT NULL,
        initiator_iqn TEXT NOT NULL,
        target_iqn TEXT NOT NULL,
        chap_user TEXT,
        chap_secret TEXT,
        mutual_user TEXT,
        mutual_secret TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX exports_mac ON exports(mac);
