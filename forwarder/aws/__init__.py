"""AWS discovery: the forwarder reads its endpoint and resolver addresses from the AWS API
and says what is misconfigured (the optional `aws:` section; `pip install 'forwarder[aws]'`).

- `inventory`: what was found (frozen values) and the state file;
- `api`: reading the AWS API into an inventory (boto3, the only module importing it);
- `services`: AWS DNS names and the endpoint services they belong to;
- `rules`: a configuration's `aws:` references made concrete from an inventory;
- `ipranges`: AWS's published ip-ranges.json, and which service a public address is in;
- `diagnosis`: why a protected name got a public address, in words, for the policy;
- `checks`: `forwarder aws check`, misconfigurations and their fixes;
- `refresh`: the background refresh, its metrics, and the inventory's part in /readyz;
- `commands`: `forwarder aws inventory` and `forwarder aws check`.
"""
