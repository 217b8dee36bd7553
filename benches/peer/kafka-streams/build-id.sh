#!/usr/bin/env bash
# The name of a build of the Kafka Streams peer: the Kafka release its POM pins and a hash of
# the POM and the sources, so that a changed source names a new build. scripts/prerequisites.sh
# builds the peer into ~/.cache/kev/streams-peer-<this>; side_by_side runs it from there.
set -euo pipefail
cd "$(dirname "$0")"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' pom.xml)
hash=$(find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
echo "$version-$hash"
