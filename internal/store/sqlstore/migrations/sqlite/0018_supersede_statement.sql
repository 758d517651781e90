-- SQLite's writer raises superseded_until on an issuance's predecessors
-- itself, in the issuance's transaction, instead of a trigger on the
-- certificate's INSERT. SQLite gives every statement that
-- fires a trigger a statement journal: each of the dozen pages a
-- certificate's INSERT changes (the row, ten index entries) was copied
-- there before it was written, about a fifth of a renewal's write. The
-- rule is unchanged (see 0016); PostgreSQL keeps its trigger.
-- engine's own: begin
DROP TRIGGER certificates_supersede;
-- engine's own: end
