// oidc-provider configured like the tokengate issuer in the benchmark: one confidential client using
// client_secret_basic, ID tokens signed with ALG from a freshly generated key, refresh-token rotation on,
// the default in-memory adapter. Written and started by the `bench` binary:
//   node server.mjs PORT ALG
// `POST /bench/seed?n=N` creates N grants, each with a refresh token as a code exchange would leave it,
// and answers their values as a JSON array: the load client then chains refreshes from each.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const [port, alg] = [Number(process.argv[2]), process.argv[3]];
const issuer = `http://127.0.0.1:${port}`;
const generated = {
  RS256: () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ES256: () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  EdDSA: () => crypto.generateKeyPairSync('ed25519'),
}[alg]();
const jwk = { ...generated.privateKey.export({ format: 'jwk' }), kid: `bench-${alg}`, alg, use: 'sig' };

const account = {
  accountId: '08a8684b-db88-4b73-90a9-3cd1661f5466',
  claims: async () => ({
    sub: '08a8684b-db88-4b73-90a9-3cd1661f5466',
    email: 'admin@example.com',
    email_verified: true,
    preferred_username: 'admin',
    groups: ['admins', 'developers'],
  }),
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'bench',
    client_secret: 'bench-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:8080/oauth2/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [jwk] },
  enabledJWA: { idTokenSigningAlgValues: [alg] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'], groups: ['groups'] },
  rotateRefreshToken: true,
  conformIdTokenClaims: false,
  findAccount: async (_ctx, id) => (id === account.accountId ? account : undefined),
  features: { devInteractions: { enabled: false } },
  ttl: { AccessToken: 600, IdToken: 600, RefreshToken: 168 * 3600, Grant: 720 * 3600 },
});

async function seed(n) {
  const client = await provider.Client.find('bench');
  const scope = 'openid email profile groups offline_access';
  const tokens = [];
  for (let i = 0; i < n; i += 1) {
    const grant = new provider.Grant({ accountId: account.accountId, clientId: 'bench' });
    grant.addOIDCScope(scope);
    grant.addOIDCClaims(['email', 'email_verified', 'preferred_username', 'groups']);
    const grantId = await grant.save();
    const rt = new provider.RefreshToken({
      accountId: account.accountId,
      authTime: Math.floor(Date.now() / 1000),
      client,
      grantId,
      gty: 'authorization_code',
      scope,
    });
    tokens.push(await rt.save());
  }
  return tokens;
}

const handle = provider.callback();
http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/bench/seed')) {
    const n = Number(new URL(req.url, issuer).searchParams.get('n') || '1');
    seed(n).then(
      (tokens) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(tokens)); },
      (e) => { res.statusCode = 500; res.end(String(e && e.stack)); },
    );
    return;
  }
  handle(req, res);
}).listen(port, '127.0.0.1', () => process.stderr.write(`oidc-provider listening on ${issuer} (${alg})\n`));
