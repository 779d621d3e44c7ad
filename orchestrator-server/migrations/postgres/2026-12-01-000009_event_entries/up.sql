-- A workflow.transitioned event refers to its history entry (transitions, by subject and
-- seq) instead of copying it: its data is stored empty and rebuilt from the entry when read,
-- so an advance writes its entry once. Other events keep their data.
ALTER TABLE events ADD COLUMN seq BIGINT;
