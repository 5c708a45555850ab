// panva's oidc-provider (an OpenID Certified provider) as the filter's upstream in tests/tests/oidc_provider.rs,
// configured the way a strict provider is run: served under a path (/realms/acme, as Keycloak does), PKCE
// required, refresh tokens rotated on every use with no reuse window (a reused one revokes the grant),
// offline_access only with prompt=consent (OpenID Connect Core §11), its own login and consent pages
// (devInteractions: any login and password are accepted). Started by the tests:
//   node server.mjs PORT
// The client is the filter's: `gateway`, client_secret_basic, redirect http://127.0.0.1:8080/oauth2/callback.
// More clients (oidc-provider client metadata, a JSON array) may come in OIDC_PROVIDER_EXTRA_CLIENTS: the
// issuer's tests register the issuer's `oidc` connector that way.
// `POST /test-clock?advance=SECONDS` moves the provider's clock forward, as the tests move the filter's
// (token lifetimes pass without waiting for them).
import http from 'node:http';
import Provider from 'oidc-provider';

let offsetMs = 0;
const realNow = Date.now;
Date.now = () => realNow() + offsetMs;

const port = Number(process.argv[2]);
const mount = '/realms/acme';
const issuer = `http://127.0.0.1:${port}${mount}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'gateway',
    client_secret: 'gateway-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:8080/oauth2/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1:8080/'],
    token_endpoint_auth_method: 'client_secret_basic',
  }, ...JSON.parse(process.env.OIDC_PROVIDER_EXTRA_CLIENTS || '[]')],
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'], groups: ['groups'] },
  conformIdTokenClaims: false,
  rotateRefreshToken: true,
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({
      sub: id,
      email: `${id}@example.com`,
      email_verified: true,
      preferred_username: id,
      groups: ['developers'],
    }),
  }),
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: { AccessToken: 3600, IdToken: 3600, RefreshToken: 168 * 3600, Grant: 720 * 3600, Session: 3600, Interaction: 600 },
});
// Plain HTTP on loopback for the tests; the provider would otherwise insist on TLS for cookies.
provider.proxy = true;

const handle = provider.callback();
http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/test-clock')) {
    offsetMs += 1000 * Number(new URL(req.url, issuer).searchParams.get('advance') || '0');
    res.end('ok\n');
    return;
  }
  if (!req.url.startsWith(mount)) {
    res.statusCode = 404;
    res.end('not under the mount path\n');
    return;
  }
  // Mounted the way express mounts it: the provider reads its path from originalUrl.
  req.originalUrl = req.url;
  req.url = req.url.slice(mount.length) || '/';
  handle(req, res);
}).listen(port, '127.0.0.1', () => console.log(`oidc-provider ${issuer}`));
