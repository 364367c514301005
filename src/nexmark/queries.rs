//! Nexmark's queries as this engine's SQL, over the tables `person`, `auction` and `bid`
//! ([`super::Stream::create_table`]), each made a view by `CREATE VIEW qN AS …`.
//!
//! Written from the reference's (`nexmark/nexmark`, `queries/qN.sql`, Flink SQL) with these
//! changes, the same in every system that runs them without Flink's extensions:
//! - a tumbling window `TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)` is a
//!   group by `date_bin(INTERVAL '10 seconds', date_time)` (its start);
//! - `count(*) FILTER (WHERE p)` is `sum(CASE WHEN p THEN 1 ELSE 0 END)`, `DATE_FORMAT(…,
//!   'yyyy-MM-dd')` is `date_trunc('day', …)`;
//! - a `ROW_NUMBER()` whose order can tie (two bids of one price at one time) is broken by the
//!   bid's `id`, so that the answer is one (Nexmark's own is any of the tied rows).
//!
//! - a hopping window (q5's `HOP(…, INTERVAL '2' SECOND, INTERVAL '10' SECOND)`) is the
//!   union of the five tumbling windows of 10 seconds whose origins are 2 seconds apart:
//!   `date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:0k')` for k = 0,
//!   2, 4, 6, 8 — the five windows that hold the bid, each named by its start;
//! - `avg` of integers (q4) is taken as a `numeric` to the cent (`CAST(avg(CAST(x AS
//!   numeric(38, 2))) AS numeric(38, 2))`): DataFusion's `avg` of integers is a float, which
//!   no view keeps exactly.
//!
//! q7 takes a bid to be in the window it falls in (`date_bin` of its time equal to the
//! window's start), where Nexmark's `BETWEEN window_end - 10 s AND window_end` also counts a
//! bid at the very end of a window in it. q5 keeps, per window, the auctions of the most bids
//! (`num = maxn`, where Nexmark writes `num >= maxn`: the same rows).
//!
//! Not here: q6 (a window of the last 10 per seller: not in Flink's set either), q10–q16 and
//! q21–q23 (file sinks, user functions, processing time, side inputs).

/// The queries, by name: `SELECT` text.
pub const QUERIES: [(&str, &str); 13] = [
    ("q0", "SELECT auction, bidder, price, date_time, extra FROM bid"),
    ("q1", "SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid"),
    ("q2", "SELECT auction, price FROM bid WHERE auction % 123 = 0"),
    (
        "q3",
        "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id \
         WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')",
    ),
    (
        "q4",
        "SELECT q.category, CAST(avg(CAST(q.final AS numeric(38, 2))) AS numeric(38, 2)) AS avg_final FROM (SELECT max(b.price) AS final, a.category \
         FROM auction a JOIN bid b ON a.id = b.auction WHERE b.date_time BETWEEN a.date_time AND a.expires \
         GROUP BY a.id, a.category) q GROUP BY q.category",
    ),
    (
        "q5",
        "WITH counts AS (SELECT auction, window_start, count(*) AS num FROM (SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS window_start FROM bid UNION ALL \
         SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:02') AS window_start FROM bid UNION ALL \
         SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:04') AS window_start FROM bid UNION ALL \
         SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:06') AS window_start FROM bid UNION ALL \
         SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:08') AS window_start FROM bid) hop \
         GROUP BY auction, window_start) \
         SELECT c.auction, c.num, c.window_start FROM counts c JOIN (SELECT window_start, max(num) AS maxn \
         FROM counts GROUP BY window_start) m ON c.window_start = m.window_start AND c.num = m.maxn",
    ),
    (
        "q7",
        "SELECT b.auction, b.price, b.bidder, b.date_time, b.extra FROM bid b JOIN (SELECT max(price) AS maxprice, \
         date_bin(INTERVAL '10 seconds', date_time) AS window_start FROM bid GROUP BY 2) m \
         ON b.price = m.maxprice AND date_bin(INTERVAL '10 seconds', b.date_time) = m.window_start",
    ),
    (
        "q8",
        "SELECT p.id, p.name, p.starttime FROM (SELECT id, name, date_bin(INTERVAL '10 seconds', date_time) AS starttime \
         FROM person GROUP BY 1, 2, 3) p JOIN (SELECT seller, date_bin(INTERVAL '10 seconds', date_time) AS starttime \
         FROM auction GROUP BY 1, 2) a ON p.id = a.seller AND p.starttime = a.starttime",
    ),
    (
        "q9",
        "SELECT id, item_name, initial_bid, reserve, date_time, expires, seller, category, auction, bidder, price, \
         bid_date_time FROM (SELECT a.id, a.item_name, a.initial_bid, a.reserve, a.date_time, a.expires, a.seller, \
         a.category, b.auction, b.bidder, b.price, b.date_time AS bid_date_time, row_number() OVER \
         (PARTITION BY a.id ORDER BY b.price DESC, b.date_time, b.id) AS rownum FROM auction a JOIN bid b \
         ON a.id = b.auction WHERE b.date_time BETWEEN a.date_time AND a.expires) x WHERE rownum <= 1",
    ),
    (
        "q17",
        "SELECT auction, date_trunc('day', date_time) AS day, count(*) AS total_bids, \
         sum(CASE WHEN price < 10000 THEN 1 ELSE 0 END) AS rank1_bids, \
         sum(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 ELSE 0 END) AS rank2_bids, \
         sum(CASE WHEN price >= 1000000 THEN 1 ELSE 0 END) AS rank3_bids, min(price) AS min_price, \
         max(price) AS max_price, sum(price) AS sum_price FROM bid GROUP BY auction, date_trunc('day', date_time)",
    ),
    (
        "q18",
        "SELECT auction, bidder, price, channel, url, date_time FROM (SELECT auction, bidder, price, channel, url, \
         date_time, row_number() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, id DESC) AS rank_number \
         FROM bid) x WHERE rank_number <= 1",
    ),
    (
        "q19",
        "SELECT auction, bidder, price, date_time, rank_number FROM (SELECT auction, bidder, price, date_time, \
         row_number() OVER (PARTITION BY auction ORDER BY price DESC, id) AS rank_number FROM bid) x \
         WHERE rank_number <= 10",
    ),
    (
        "q20",
        "SELECT b.auction, b.bidder, b.price, b.channel, b.date_time, a.item_name, a.initial_bid, a.reserve, \
         a.expires, a.seller, a.category FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10",
    ),
];
