#!/usr/bin/env bash
# Resolves the Apache Kafka broker jars from Maven Central into the cache (once).
source "$(dirname "$0")/lib.sh"
locked bootstrap-kafka "$0" "$@"

LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
if [[ -f "$LIBS/.complete" ]]; then
  say "kafka $KAFKA_VERSION: cached at $LIBS"
  exit 0
fi
need java "Install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)."
need mvn "Install Apache Maven (Debian: apt-get install maven)."
say "kafka $KAFKA_VERSION: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its dependencies from Maven Central"
rm -rf "$LIBS"
mvn -q -B -Dstyle.color=never -f "$(dirname "$0")/../kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS" \
  || die "Maven could not resolve Kafka $KAFKA_VERSION: is Maven Central reachable?"
touch "$LIBS/.complete"
say "kafka $KAFKA_VERSION: $(ls "$LIBS" | wc -l) jars in $LIBS"
