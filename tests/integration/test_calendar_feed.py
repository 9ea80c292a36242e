"""The holiday calendar on a real broker: a worker's feed reads every partition of
shop.calendar up to its end before it starts (what was published before the worker), then
follows what comes after; bad records are skipped there (the group's owner dead-letters them)."""

import asyncio
import json
from datetime import date

from aiokafka import AIOKafkaProducer

from runtime.settings import Settings
from streams.calendar_feed import CalendarFeed
from streams.topics import ensure_topics

EPOCH = date(1970, 1, 1)


def holiday(event_id: str, location: str, day: str, **extra: object) -> bytes:
    return json.dumps({"event_id": event_id, "location": location, "start_day": day,
                       "end_day": day, **extra}).encode()


async def test_the_feed_reads_the_whole_calendar_then_follows_it(kafka_bootstrap,
                                                                 fresh_topic_prefix):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=3)
    await ensure_topics(settings)
    topic = settings.topics.calendar
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for p in range(3):  # one holiday per partition, and a bad record
            await producer.send_and_wait(topic, key=f"h{p}".encode(), partition=p,
                                         value=holiday(f"h{p}", "L", f"2011-04-2{p}"))
        await producer.send_and_wait(topic, key=b"bad", partition=1, value=b'{"event_id": ')
        async with CalendarFeed(settings) as feed:
            first = (date(2011, 4, 20) - EPOCH).days
            # read before the block starts: nothing forecast without it
            assert feed.calendar.flags(["L"], first, 4)[0].tolist() == [1, 1, 1, 0]
            assert feed.skipped == 1
            await producer.send_and_wait(topic, key=b"h1", partition=1,
                                         value=holiday("h1", "L", "2011-04-21", version=2,
                                                       cancelled=True))
            await producer.send_and_wait(topic, key=b"h9", partition=2,
                                         value=holiday("h9", "*", "2011-04-23"))
            for _ in range(100):
                if feed.calendar.revision == 5:
                    break
                await asyncio.sleep(0.1)
            assert feed.calendar.flags(["L", "M"], first, 4).tolist() == [[1, 0, 1, 1],
                                                                          [0, 0, 0, 1]]
    finally:
        await producer.stop()


async def test_a_published_file_reaches_the_feed_and_republishing_changes_nothing(
        kafka_bootstrap, fresh_topic_prefix, tmp_path):
    from streams.calendar_file import publish_calendar, read_calendar_csv

    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2)
    path = tmp_path / "cal.csv"
    path.write_text("location,start_day,end_day,name\n*,2011-04-22,2011-04-25,Easter\n"
                    "L,2011-04-20,,closed\n")
    events = read_calendar_csv(path)
    assert await publish_calendar(settings, events) == 2  # creates the topic, compacted
    assert await publish_calendar(settings, read_calendar_csv(path)) == 2  # the same ids
    async with CalendarFeed(settings) as feed:
        first = (date(2011, 4, 20) - EPOCH).days
        assert feed.calendar.flags(["L", "M"], first, 6).tolist() == [[1, 0, 1, 1, 1, 1],
                                                                      [0, 0, 1, 1, 1, 1]]
        assert len(feed.calendar) == 2 and feed.calendar.revision == 2  # repeats: duplicates
