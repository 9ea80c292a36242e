-- 0006_model_versions: every champion/challenger decision of `shelfcast retrain`, promoted or
-- not. A row is one retraining: the challenger's version, the demand it was trained and
-- backtested on (first/last bucket of the panel read from demand_history), the champion it
-- met (NULL when the model directory was empty), both models' scores on the same
-- rolling-origin folds ({"pinball": .., "coverage_80": .., "mase": ..}, NULL for a missing
-- champion), the protocol (horizon, folds, origins) and whether and why it was promoted.
-- The same version may appear more than once (retrained on unchanged data), hence the id.

CREATE TABLE model_versions (
    id                  bigserial PRIMARY KEY,
    version             text NOT NULL,
    trained_at          timestamptz NOT NULL,
    bucket_seconds      integer NOT NULL,
    data_first_bucket   timestamptz NOT NULL,
    data_last_bucket    timestamptz NOT NULL,
    n_series            integer NOT NULL CHECK (n_series > 0),
    champion_version    text NULL,
    champion_scores     jsonb NULL,
    challenger_scores   jsonb NOT NULL,
    protocol            jsonb NOT NULL,
    promoted            boolean NOT NULL,
    reason              text NOT NULL,
    decided_at          timestamptz NOT NULL DEFAULT now()
);

-- The dashboard reads the latest decisions first.
CREATE INDEX model_versions_decided_at ON model_versions (decided_at DESC, id DESC);
