"""The seed project's design, as its README describes it: Spark Structured Streaming reads
`ip_logs` from Kafka, parses the JSON, drops invalid records (required fields, IP format,
timestamp, port range) and appends the rest to Cassandra's `access_logs` with the Spark
Cassandra Connector, checkpointing its progress.

`cargo xtask bench --baseline spark` runs it with `spark-submit --master local[2]` against
the bench stack, side by side with our stream-reader and cassandra-writer. It is written as a
Spark user would write it: defaults everywhere except what the seed states (topic, keyspace,
table, append mode, checkpoint directory). Settings come from the environment:

    SPARK_KAFKA_BROKER    bootstrap servers              (127.0.0.1:9092)
    SPARK_INPUT_TOPIC     topic to read                  (ip_logs)
    SPARK_CASSANDRA_HOST  contact point host             (127.0.0.1)
    SPARK_CASSANDRA_PORT  native protocol port           (9042)
    SPARK_KEYSPACE        keyspace of access_logs        (ip_logs)
    SPARK_CHECKPOINT_DIR  checkpoint location            (/tmp/spark-checkpoint)
    SPARK_TRIGGER_SECONDS micro-batch interval; 0 means Spark's default (next batch as soon as
                          the previous one ends). The seed's README says 5-10 s.   (0)
"""

import os
import sys

from pyspark.sql import SparkSession
from pyspark.sql.functions import col, current_timestamp, from_json, to_timestamp
from pyspark.sql.types import LongType, IntegerType, StringType, StructField, StructType

env = os.environ.get
BROKER = env("SPARK_KAFKA_BROKER", "127.0.0.1:9092")
TOPIC = env("SPARK_INPUT_TOPIC", "ip_logs")
KEYSPACE = env("SPARK_KEYSPACE", "ip_logs")
CHECKPOINT = env("SPARK_CHECKPOINT_DIR", "/tmp/spark-checkpoint")
TRIGGER_SECONDS = int(env("SPARK_TRIGGER_SECONDS", "0"))

# The seed's log format: eight fields.
SCHEMA = StructType(
    [
        StructField("timestamp", StringType()),
        StructField("source_ip", StringType()),
        StructField("destination_ip", StringType()),
        StructField("port", IntegerType()),
        StructField("protocol", StringType()),
        StructField("bytes_sent", LongType()),
        StructField("bytes_received", LongType()),
        StructField("action", StringType()),
    ]
)
# "Validates IP address format": IPv4 dotted quads and IPv6 (full and compressed forms), the
# two kinds of address the records carry.
OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{OCTET}\.{OCTET}\.{OCTET}\.{OCTET}"
H = "[0-9a-fA-F]{1,4}"
IPV6 = "|".join(
    [
        rf"({H}:){{7}}{H}",
        rf"({H}:){{1,7}}:",
        rf"({H}:){{1,6}}:{H}",
        rf"({H}:){{1,5}}(:{H}){{1,2}}",
        rf"({H}:){{1,4}}(:{H}){{1,3}}",
        rf"({H}:){{1,3}}(:{H}){{1,4}}",
        rf"({H}:){{1,2}}(:{H}){{1,5}}",
        rf"{H}:(:{H}){{1,6}}",
        rf":((:{H}){{1,7}}|:)",
    ]
)
IP = rf"^({IPV4}|{IPV6})$"

spark = (
    SparkSession.builder.appName("seed-ip-log-pipeline")
    .config("spark.cassandra.connection.host", env("SPARK_CASSANDRA_HOST", "127.0.0.1"))
    .config("spark.cassandra.connection.port", env("SPARK_CASSANDRA_PORT", "9042"))
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("WARN")

raw = (
    spark.readStream.format("kafka")
    .option("kafka.bootstrap.servers", BROKER)
    .option("subscribe", TOPIC)
    .option("startingOffsets", "earliest")
    .load()
)
logs = raw.select(from_json(col("value").cast("string"), SCHEMA).alias("log")).select("log.*")

# The seed's validation: required fields, IP format, timestamp, port range.
valid = (
    logs.where(
        col("timestamp").isNotNull()
        & col("source_ip").isNotNull()
        & col("destination_ip").isNotNull()
        & col("port").isNotNull()
        & col("protocol").isNotNull()
        & col("action").isNotNull()
    )
    .where(col("source_ip").rlike(IP) & col("destination_ip").rlike(IP))
    .withColumn("timestamp", to_timestamp(col("timestamp")))
    .where(col("timestamp").isNotNull())
    .where(col("port").between(0, 65535))
    .withColumn("created_at", current_timestamp())
)


def append_to_cassandra(batch, batch_id):
    (
        batch.write.format("org.apache.spark.sql.cassandra")
        .mode("append")
        .options(keyspace=KEYSPACE, table="access_logs")
        .save()
    )


writer = valid.writeStream.foreachBatch(append_to_cassandra).option(
    "checkpointLocation", CHECKPOINT
)
if TRIGGER_SECONDS > 0:
    writer = writer.trigger(processingTime=f"{TRIGGER_SECONDS} seconds")
query = writer.start()
print(f"query started: id={query.id}", flush=True)
try:
    query.awaitTermination()
except KeyboardInterrupt:
    query.stop()
    sys.exit(0)
