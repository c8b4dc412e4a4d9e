-- Enrolment rules (bellows_model::discovery::rule): tried in order on each
-- discovered machine. `enrolled` counts the machines each rule took, the
-- {counter} of its hostname pattern.
CREATE TABLE rule (
    name        TEXT COLLATE "C" PRIMARY KEY,
    body        TEXT COLLATE "C" NOT NULL,
    enrolled    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
