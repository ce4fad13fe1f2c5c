-- 0010_hide_position_rows: under scope security, no reader sees a doc row at
-- version 0.
--
-- The contract: a doc row with doc_version = 0 is not a doc. It is a
-- placeholder (a sink's first round trip creates one for a key it locks) or a
-- stream position only (a delete, with a source position, of a doc that never
-- existed). Such a row carries the scope of the batch's last upsert of its
-- key, an upsert that may never have applied (a duplicate, a conflict), so
-- its key, stream and seq would show in that scope's view. The read
-- functions never return it; a plain SELECT on oasync.docs by a role bound
-- to a scope must not either. Trusted roles (the sink's writers, the
-- servers) still see every row: the sink reads stream positions.
--
-- The policy is made by `oasync grants --scope-security on`
-- (sink/src/grants.cpp, kScopeSecurityOn), which now makes it so. A database
-- whose scope security was turned on before this migration gets the new rule
-- here; one without the policy is left as it is. The expression is the one
-- grants makes, and must stay in step with it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_policies AS p
               WHERE p.schemaname OPERATOR(pg_catalog.=) 'oasync'
                 AND p.tablename OPERATOR(pg_catalog.=) 'docs'
                 AND p.policyname OPERATOR(pg_catalog.=) 'oasync_scope_read') THEN
        ALTER POLICY oasync_scope_read ON oasync.docs
            USING ((SELECT oasync.session_trusted(CURRENT_USER))
                   OR (doc_version OPERATOR(pg_catalog.>) 0
                       AND scope OPERATOR(pg_catalog.=)
                           (SELECT oasync.session_scope(CURRENT_USER) COLLATE pg_catalog."default")));
    END IF;
END
$$;
