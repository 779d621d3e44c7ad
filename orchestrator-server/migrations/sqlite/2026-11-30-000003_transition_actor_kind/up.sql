-- Who moved a workflow, more exactly: the actor's kind (human, agent, system; NULL when
-- unknown) and, with principals, whom the principal acted for.
ALTER TABLE transitions ADD COLUMN actor_kind TEXT;
ALTER TABLE transitions ADD COLUMN on_behalf_of TEXT;
