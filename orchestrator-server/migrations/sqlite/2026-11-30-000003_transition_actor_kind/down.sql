ALTER TABLE transitions DROP COLUMN on_behalf_of;
ALTER TABLE transitions DROP COLUMN actor_kind;
