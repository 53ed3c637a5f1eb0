-- Schema version 2: boot profiles per host, last known address.
-- Released: never edit this file. A schema change is a new file, the next number.
-- netbootd/store/sqlite.py drops the comment lines, splits the rest on semicolons
-- and runs it in one transaction that also sets PRAGMA user_version.

    ALTER TABLE hosts ADD COLUMN ip TEXT;
    ALTER TABLE hosts ADD COLUMN profile TEXT;
    ALTER TABLE hosts ADD COLUMN profile_args TEXT NOT NULL DEFAULT '{}';
    