-- 0009_holiday_calendar: the shop's holidays per location (the `shop.calendar` topic,
-- schemas.events.HolidayEvent), recorded by the optimizer beside demand_history so that
-- retraining from PostgreSQL trains on the same holiday flags the stream serves
-- (optimizer/holidays.py). One row per event_id: a higher version replaces it, a cancelled
-- one stays as a withdrawn row that remembers its version. location '*': every location.

CREATE TABLE holiday_calendar (
    event_id     text PRIMARY KEY,
    version      integer NOT NULL CHECK (version >= 1),
    location     text NOT NULL,
    start_day    date NOT NULL,
    end_day      date NOT NULL CHECK (end_day >= start_day),
    cancelled    boolean NOT NULL,
    name         text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX holiday_calendar_days ON holiday_calendar (end_day, start_day);
