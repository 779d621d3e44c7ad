-- The minute sweep of reservations left by a stopped server read every consultation (the
-- `visible` column sits after each row's long texts) on the writer, which every write waited
-- for. The few reservations, by age, in an index of their own; the sweep names its predicate
-- as a literal, so that the index is seen to serve it.
CREATE INDEX consultations_reserved ON consultations (created_at) WHERE visible = false;
