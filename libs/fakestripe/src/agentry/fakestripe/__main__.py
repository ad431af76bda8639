"""`python -m agentry.fakestripe`: a stateful Stripe-compatible server (a test double, never a payment system).

Point Agentry at it with AGENTRY_BILLING_PROVIDER=stripe, STRIPE_SECRET_KEY=sk_test_...,
STRIPE_WEBHOOK_SECRET=whsec_... and AGENTRY_BILLING_STRIPE_API_BASE=http://127.0.0.1:<port>;
give it the same secret and the gateway's webhook URL. "Pay" a Checkout Session with
`curl -X POST http://127.0.0.1:<port>/_test/checkout/sessions/<id>/pay` (see agentry.fakestripe.app).
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agentry.fakestripe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", default=None, help="the only secret key accepted (default: any sk_ key)")
    parser.add_argument("--webhook-url", default="http://127.0.0.1:8000/api/billing/webhook")
    parser.add_argument("--webhook-secret", default=None, help="whsec_... (no webhooks are sent without it)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(api_key=args.api_key, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret)
    app.state.fake.base_url = f"http://{args.host}:{args.port}"
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
