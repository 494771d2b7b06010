"""Names and markers shared by the controller, the webhook, the chart and the tests (docs/DESIGN.md)."""

from __future__ import annotations

GROUP = "tcr.tencentcloudcr.com"
VERSION = "v1"
KIND = "ImagePullSecret"
PLURAL = "imagepullsecrets"
CRD_NAME = f"{PLURAL}.{GROUP}"
API_VERSION = f"{GROUP}/{VERSION}"

SECRET_PREFIX = "tcr.ips"
#: The add-on namespace's Secret holding the token minted for ``spec.docker.tokenFrom`` (the same
#: length as SECRET_PREFIX: every valid ImagePullSecret name gives a valid Secret name).
MINTED_SECRET_PREFIX = "tcr.tok"
SECRET_TYPE = "kubernetes.io/dockerconfigjson"
SECRET_KEY = ".dockerconfigjson"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "tcr-assistant"
LABEL_IPS = f"{GROUP}/imagepullsecret"
#: A Secret of the add-on's namespace that a passwordSecretRef may read carries this label with
#: value "true" (the chart sets it on the Secret that holds the passwords given in values). Without
#: it a reference could make the controller copy any Secret there (the webhook CA's key, Helm's
#: release records) into namespaces its author can read.
LABEL_CREDENTIAL_SOURCE = f"{GROUP}/credential-source"
CREDENTIAL_SOURCE_SELECTOR = f"{LABEL_CREDENTIAL_SOURCE}=true"
#: What the controller reads in its namespace: the credential sources and the minted tokens
#: (``tcrtoken.decision``: label value "minted", which no passwordSecretRef may read).
LOCAL_SECRETS_SELECTOR = f"{LABEL_CREDENTIAL_SOURCE} in (true,minted)"

OPT_OUT_ANNOTATION = f"{GROUP}/opt-out"
FINALIZER = f"{GROUP}/cleanup"

LEASE_NAME = "tcr-assistant-leader"
WEBHOOK_PATH = "/validate-tcr-tencentcloudcr-com-v1-imagepullsecret"

DEFAULT_PASSWORD_KEY = "password"
DEFAULT_HEALTH_ADDR = ":8081"
DEFAULT_METRICS_ADDR = ":8080"
DEFAULT_WEBHOOK_PORT = 9443
DEFAULT_WEBHOOK_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
WEBHOOK_CONFIGURATION = "tcr-assistant-validating-webhook-configuration"
#: The Pod webhook (a MutatingWebhookConfiguration on Pod CREATE, served by the same server).
POD_WEBHOOK_PATH = "/mutate-v1-pod"
WEBHOOK_SERVICE = "tcr-assistant-webhook-service"
WEBHOOK_CERT_VALIDITY = 365 * 86400.0
#: The keys of the webhook certificate Secret (kubernetes.io/tls plus the CA's).
CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
WEBHOOK_CERT_KEYS = (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)
STATUS_LIST_MAX = 50

COMPONENT = "tcr-assistant"


def secret_name(ips_name: str) -> str:
    """Name of the Secret distributed for ImagePullSecret ``ips_name``."""
    return SECRET_PREFIX + ips_name
