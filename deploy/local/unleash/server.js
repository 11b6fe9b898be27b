// Started by Conn's test fixtures and `make up`. Configuration comes from env:
// DATABASE_URL, PORT (HTTP_PORT), INIT_ADMIN_API_TOKENS, DATABASE_SSL=false.
const unleash = require('unleash-server');

unleash.start({
  db: { ssl: false },
  server: { port: Number(process.env.PORT || process.env.HTTP_PORT || 4242), host: '127.0.0.1' },
  authentication: { type: 'open-source' },
  logLevel: process.env.LOG_LEVEL || 'warn',
});
