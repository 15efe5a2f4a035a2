-- Seed note 003's Avro pipeline: seed_003_taxi_rides.py (run first)
-- produced 1,000 taxi rides with confluent-kafka's AvroProducer, its key and
-- value schemas registered in eddy's schema registry. A source over the
-- topic takes its columns from the registered value schema; a materialized
-- view aggregates the rides per vendor; COPY exports it.
CREATE CONNECTION csr TO CONFLUENT SCHEMA REGISTRY (URL 'http://localhost:8081');
CREATE CONNECTION kafka TO KAFKA (BROKER 'localhost:9092');

CREATE SOURCE taxi_rides
  FROM KAFKA CONNECTION kafka (TOPIC 'datatalkclub.yellow_taxi_rides')
  FORMAT AVRO USING CONFLUENT SCHEMA REGISTRY CONNECTION csr;

SELECT column_name, data_type
FROM information_schema.columns
WHERE table_name = 'taxi_rides'
ORDER BY ordinal_position;

CREATE MATERIALIZED VIEW rides_per_vendor AS
SELECT vendor_id,
       count(*) AS rides,
       sum(passenger_count) AS passengers,
       sum(trip_distance) AS distance,
       sum(total_amount) AS revenue
FROM taxi_rides
GROUP BY vendor_id;

SELECT * FROM rides_per_vendor ORDER BY vendor_id;

SELECT payment_type, count(*) AS rides
FROM taxi_rides
GROUP BY payment_type
ORDER BY payment_type;

COPY (SELECT vendor_id, rides, revenue FROM rides_per_vendor ORDER BY vendor_id) TO STDOUT WITH (FORMAT csv, HEADER);
