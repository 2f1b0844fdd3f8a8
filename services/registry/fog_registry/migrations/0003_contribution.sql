-- What each node gave, from the scheduler's job outcome events (each counted once: the consumer's inbox):
-- attempts that ran to their end there, succeeded or failed by the job itself (its exit code, its timeout);
-- attempts its node lost (down, or its sandbox broke: the node's fault); and the wall-clock and CPU time of
-- those that ran, as the agents measured them.
ALTER TABLE nodes
    ADD COLUMN attempts_succeeded bigint           NOT NULL DEFAULT 0,
    ADD COLUMN attempts_failed    bigint           NOT NULL DEFAULT 0,
    ADD COLUMN attempts_lost      bigint           NOT NULL DEFAULT 0,
    ADD COLUMN run_s              double precision NOT NULL DEFAULT 0,
    ADD COLUMN cpu_s              double precision NOT NULL DEFAULT 0;
