"""Registry tokens minted from the TCR API (``spec.docker.tokenFrom.tcr``): what to mint and when
(``decision``, pure), and the short-lived process that calls the API through the official SDK
(``helper``), so that the controller's own process never loads it."""
