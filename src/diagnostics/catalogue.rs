//! The catalogue of diagnoses: every error the crate makes names one, and the README's
//! troubleshooting table is generated from it, so the code and the docs cannot drift.

use crate::error::ErrorKind;

macro_rules! catalogue {
    ($( $variant:ident = $id:literal, $kind:ident, $retry:literal, $shows:literal, $means:literal, $help:literal; )*) => {
        /// What went wrong, finer than [`ErrorKind`]: one value per diagnosis the crate makes.
        /// [`Diagnosis::id`] is a stable text form (for logs and metrics); the README's
        /// troubleshooting table lists them all.
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Diagnosis {
            $( #[doc = $means] $variant, )*
        }

        impl Diagnosis {
            /// Every diagnosis, in the order of the troubleshooting table.
            pub const ALL: &'static [Diagnosis] = &[$( Diagnosis::$variant ),*];

            /// The stable identifier, e.g. `certificate-unknown-issuer`.
            pub fn id(self) -> &'static str {
                match self { $( Diagnosis::$variant => $id, )* }
            }

            /// The kind of error this diagnosis belongs to.
            pub fn kind(self) -> ErrorKind {
                match self { $( Diagnosis::$variant => ErrorKind::$kind, )* }
            }

            /// Whether trying again, unchanged, can succeed.
            pub fn is_retryable(self) -> bool {
                match self { $( Diagnosis::$variant => $retry, )* }
            }

            /// What it means, in a sentence.
            pub fn meaning(self) -> &'static str {
                match self { $( Diagnosis::$variant => $means, )* }
            }

            /// The fix: the error's `help` line unless the error names a more precise one.
            pub fn help(self) -> &'static str {
                match self { $( Diagnosis::$variant => $help, )* }
            }

            /// What the user sees (the start of the message), for the README. The integration
            /// tests read it back from the README (`tests/support/mod.rs`, `assert_diagnosis`)
            /// and match it against every message they provoke.
            #[cfg(test)]
            pub(crate) fn shows(self) -> &'static str {
                match self { $( Diagnosis::$variant => $shows, )* }
            }
        }
    };
}

catalogue![
    TlsServerWithoutTls = "tls-server-without-tls", TlsRefused, false,
        "the server at \"host:5432\" does not support TLS, and neon-connect never connects without it",
        "the server answered the TLS request with `N`; nothing else (no user name, no password) was sent",
        "enable TLS on the server (`ssl = on` in postgresql.conf, with a certificate), or check that host and port point at the right server";
    TlsErrorBeforeHandshake = "tls-error-before-handshake", TlsRefused, false,
        "the server at \"host:5432\" answered the TLS request with an error",
        "an error before encryption may be forged by anyone on the path (CVE-2024-10977), so its text is not shown; often the server is overloaded or restarting",
        "try again; if it persists, check the server's log (too many connections, restarts)";
    NotPostgres = "not-postgres", TlsRefused, false,
        "the server at \"host:5432\" answered the TLS request with 'H', which no PostgreSQL server sends",
        "another program (a web server, a load balancer) listens on this port; found by `neon-doctor`, which reads the answer tokio-postgres hides",
        "check the port (PostgreSQL's is 5432) and that the host is the database, not a web or API endpoint";
    TlsInjectedPlaintext = "tls-injected-plaintext", TlsRefused, false,
        "received unencrypted data after SSL response from \"host:5432\"",
        "bytes arrived between the server's `S` and the TLS handshake: unencrypted, so possibly injected (CVE-2021-23222)",
        "something between you and the server injected plaintext before the TLS handshake (a man-in-the-middle attempt or a broken proxy); check the network path";
    TlsAlpn = "tls-alpn", TlsHandshake, false,
        "direct SSL connection was established without ALPN protocol negotiation extension",
        "`sslnegotiation=direct` needs a server that speaks direct TLS for PostgreSQL and answers ALPN `postgresql`",
        "remove `sslnegotiation=direct` (the server needs PostgreSQL 17+ or Neon's proxy for it)";
    TlsDirectUnsupported = "tls-direct-unsupported", TlsHandshake, false,
        "the server at \"host:5432\" hung up on direct TLS: it does not speak it",
        "`sslnegotiation=direct` starts TLS without the TLS request; servers before PostgreSQL 17 (and most poolers) read the TLS hello as a malformed startup packet and hang up",
        "remove `sslnegotiation=direct` (direct TLS needs PostgreSQL 17+ or Neon's proxy; for Neon hosts neon-connect uses it by default and falls back by itself)";
    TlsHandshake = "tls-handshake", TlsHandshake, false,
        "the TLS handshake with \"host:5432\" failed",
        "the server aborted or garbled the handshake (protocol versions, a client certificate it wants, not a TLS server)",
        "check the server's TLS settings and log; `ssl_min_protocol_version`/`ssl_max_protocol_version` must overlap";
    TlsClientCertificateRequired = "tls-client-certificate-required", TlsHandshake, false,
        "the server \"host:5432\" requires a client certificate",
        "pg_hba.conf asks for `clientcert`, and none was given",
        "set `sslcert` and `sslkey` to your client certificate and key";
    TlsClientCertificateRejected = "tls-client-certificate-rejected", TlsHandshake, false,
        "the server \"host:5432\" rejected the client certificate: the server sent the alert \"unknown CA\"",
        "the server asked for a client certificate and refused the one sent (unknown CA, revoked, expired, or not for this user)",
        "check the client certificate (`sslcert`): it must be issued by a CA in the server's `ssl_ca_file`, be valid now, not be revoked, and name the user (CN) when pg_hba.conf says `clientcert=verify-full`";
    TlsVersionUnsupported = "tls-version-unsupported", TlsHandshake, false,
        "the server \"host:5432\" offers only TLS versions below 1.2 (or none that this connection allows), and TLS 1.0 and 1.1 are never accepted",
        "TLS 1.0 and 1.1 are broken and rustls never speaks them; the server (or a proxy) allows nothing newer",
        "enable TLS 1.2 or 1.3 on the server (`ssl_min_protocol_version = 'TLSv1.2'` in postgresql.conf, with a current OpenSSL)";
    TlsClientCertificateNotRequested = "tls-client-certificate-not-requested", TlsHandshake, false,
        "server did not request an SSL certificate: \"host:5432\" finished the TLS handshake without asking for one (sslcertmode=require)",
        "`sslcertmode=require` insists that the server asks for a client certificate (libpq 16), and it did not",
        "make the server ask (`clientcert=verify-ca` or `verify-full` in pg_hba.conf, or `cert` authentication), or remove `sslcertmode=require`";
    ServerMessageTooLarge = "server-message-too-large", Server, false,
        "refused \"host:5432\": the server sent ... of 104857620 bytes during ..., past the 4 MiB the connect phase may read",
        "before the connection is ready a server sends a few kilobytes; a peer that sends or announces megabytes is broken or hostile, and is cut off before it is buffered",
        "check that host and port point at a PostgreSQL server (or Neon's proxy) and not something else; if a proxy sits in between, check it";
    CertificateUnknownIssuer = "certificate-unknown-issuer", Certificate, false,
        "the certificate of \"host:5432\" was not issued by a trusted authority (checked against the system root store) / the certificate of \"host:5432\" was not issued by a trusted authority (checked against the system root store (from SSL_CERT_FILE=/path/to/bundle.pem))",
        "no root in the system store signed the server's chain: a private CA, a self-signed certificate, or a server that omits its intermediate",
        "if the server uses a private CA, set `sslrootcert=/path/to/ca.pem`; if it uses a public CA, the server may be omitting its intermediate certificate";
    CertificateUnknownIssuerFile = "certificate-unknown-issuer-file", Certificate, false,
        "the certificate of \"host:5432\" was not issued by a trusted authority (checked against the root certificate file /path/to/ca.pem)",
        "the `sslrootcert` file does not hold the CA that signed the server's chain",
        "check that the `sslrootcert` file holds the CA that signed the server's certificate (and that the server sends its intermediates)";
    CertificateWrongName = "certificate-wrong-name", Certificate, false,
        "the certificate of \"host:5432\" is not valid for the name \"host\"; it is valid for ...",
        "`verify-full` checks that the certificate names the host you connect to",
        "connect with a host name the certificate holds (not an IP address or an alias); `hostaddr` can pin the address while `host` keeps the name";
    CertificateExpired = "certificate-expired", Certificate, false,
        "the certificate of \"host:5432\" has expired (it expired at ..., now is ...)",
        "the server's certificate is past its end date (or this machine's clock is wrong)",
        "renew the server's certificate (or fix this machine's clock if it is wrong)";
    CertificateNotYetValid = "certificate-not-yet-valid", Certificate, false,
        "the certificate of \"host:5432\" is not valid yet (valid from ..., now is ...)",
        "the certificate's start date is in the future (or this machine's clock is wrong)",
        "check this machine's clock, or the server certificate's start date";
    CertificateCaAsLeaf = "certificate-ca-as-leaf", Certificate, false,
        "the server \"host:5432\" presented a CA certificate as its own certificate",
        "the server's certificate has CA:TRUE; rustls (unlike OpenSSL) refuses a CA as an end-entity certificate",
        "give the server a leaf certificate signed by the CA (CA:FALSE), not the CA certificate itself";
    CertificateV1 = "certificate-v1", Certificate, false,
        "the certificate of \"host:5432\" is an X.509 v1 certificate, which is not supported",
        "v1 certificates carry no extensions (no subjectAltName), and rustls refuses them",
        "reissue the server certificate as X.509 v3 (with subjectAltName)";
    CertificateRevoked = "certificate-revoked", Certificate, false,
        "the certificate of \"host:5432\" was refused: the certificate \"CN=...\" (serial ...) was revoked on ... according to the certificate revocation list /path/to/crl.pem",
        "a certificate of the server's chain is listed as revoked in `sslcrl`/`sslcrldir` (or `~/.postgresql/root.crl`)",
        "the server must present a certificate that is not revoked; if the list is wrong, fix the list given in `sslcrl`/`sslcrldir`";
    CertificateRevocationUnchecked = "certificate-revocation-unchecked", Certificate, false,
        "the certificate of \"host:5432\" was refused: the revocation status of the certificate \"CN=...\" is unknown: no certificate revocation list from its issuer \"CN=...\" was given (lists read: ...) / the certificate of \"host:5432\" was refused: the certificate revocation list /path/to/crl.pem expired at ...",
        "revocation lists were given, and one certificate of the chain has no list from its issuer, or its list is past its `nextUpdate`; like libpq, such a chain is refused",
        "give a current revocation list from every CA of the server's chain (intermediates included) in `sslcrl`/`sslcrldir`";
    CertificateOther = "certificate-other", Certificate, false,
        "the certificate of \"host:5432\" was rejected: ...",
        "the certificate failed verification for another reason (named in the message)",
        "check the server's certificate chain against the roots named in the message";
    CertificateChainTooDeep = "certificate-chain-too-deep", Certificate, false,
        "the certificate chain of \"host:5432\" is longer than rustls allows: more than 6 intermediate certificates between the server's certificate and a trusted root (checked against ...)",
        "the path from the server's certificate to a trusted root has more intermediates than webpki accepts (6), or loops; OpenSSL (libpq) allows up to 100",
        "send a shorter chain from the server (leaf, its intermediates, no cross-signed loops), or trust the issuing intermediate directly with `sslrootcert`";
    CertificateTooLarge = "certificate-too-large", Certificate, false,
        "the server \"host:5432\" sent a TLS handshake message over 64 KiB, more than rustls reads: its certificate chain is too large (or its list of CAs for client certificates)",
        "rustls refuses any handshake message over 64 KiB (OpenSSL allows 100 KiB): a certificate with thousands of subjectAltNames, a long chain of large certificates, or a long `ssl_ca_file` sent when the server asks for client certificates",
        "give the server a smaller certificate chain (fewer subjectAltNames, only the intermediates needed, no root); if it asks for client certificates, shorten its `ssl_ca_file`";
    Dns = "dns", Dns, false,
        "could not resolve the host name \"host\"",
        "the name does not exist, or this machine's DNS does not answer",
        "check the host name for typos (copy it again from your provider's console) and this machine's DNS";
    UnixSocketMissing = "unix-socket-missing", Network, false,
        "no PostgreSQL server socket exists at \"/var/run/postgresql/.s.PGSQL.5432\"",
        "the directory given as host has no socket file for that port: the server is not running there, or uses another directory or port",
        "check that the server runs on this machine, its `unix_socket_directories` and its port (the socket is `<dir>/.s.PGSQL.<port>`)";
    NetworkRefused = "network-refused", Network, true,
        "connection refused by \"host:5432\"",
        "nothing listens on that port (or a firewall rejects it); a server that is starting looks the same, so it is retried",
        "check the host and port, and that the server is running (a firewall that rejects port 5432 looks the same)";
    NetworkUnreachable = "network-unreachable", Network, true,
        "\"host:5432\" is unreachable",
        "no route to the host from this machine",
        "check the network route to the host (VPN, firewall, IPv6 availability)";
    NetworkReset = "network-reset", Network, true,
        "the connection to \"host:5432\" was reset during ...",
        "the server or something on the network path cut the connection",
        "the server or something on the network path cut the connection; try again, and check the server's log";
    NetworkClosed = "network-closed", Closed, true,
        "the server at \"host:5432\" closed the connection during ...",
        "the server hung up (restarting, overloaded, or refusing this client)",
        "the server may be restarting, overloaded, or refusing this client; check the server's log";
    NetworkOther = "network-other", Network, true,
        "network error with \"host:5432\" during ...",
        "another I/O error (named in the message)",
        "check the network path to the server and try again";
    TimeoutTcp = "timeout-tcp", Timeout, true,
        "timed out after 15.0s during the TCP connect with \"host:5432\"",
        "no answer at all: a firewall that drops packets, a wrong address, or a host that is down",
        "the host does not answer on this port: check host, port and firewalls (Neon uses 5432)";
    TimeoutTls = "timeout-tls", Timeout, true,
        "timed out after 15.0s during the TLS request with \"host:5432\"",
        "the TCP connection opened but TLS never completed",
        "the server accepted the TCP connection but did not complete TLS: check that this port is PostgreSQL (or Neon's proxy) and not another service";
    TimeoutLogin = "timeout-login", Timeout, true,
        "timed out after 15.0s during the authentication with \"host:5432\"",
        "TLS completed but the login did not: a Neon compute waking from scale-to-zero, or an overloaded server",
        "the server is slow to log in (a Neon compute waking from scale-to-zero can take seconds); raise `connect_timeout` if this persists";
    AuthPassword = "auth-password", Authentication, false,
        "password authentication failed for user \"alex\" at \"host:5432\"",
        "the password (or user name) is wrong; Neon's proxy says the same with SQLSTATE XX000",
        "check the password in the connection string (or PGPASSWORD); reset it in the console if unsure";
    AuthRejected = "auth-rejected", Authentication, false,
        "the server \"host:5432\" refused user \"alex\": ...",
        "pg_hba.conf has no line that lets this user in from here",
        "check pg_hba.conf on the server: it must allow this user and database over `hostssl`";
    ChannelBindingNotOffered = "channel-binding-not-offered", Authentication, false,
        "`channel_binding=require` failed at \"host:5432\": the server did not use channel binding",
        "the server (or a pooler in front of it) authenticated without channel binding",
        "the server must offer SCRAM-SHA-256-PLUS over TLS (password_encryption = scram-sha-256 and a `hostssl ... scram-sha-256` line); a pooler or proxy in between can also prevent it";
    ChannelBindingNoHash = "channel-binding-no-hash", Authentication, false,
        "`channel_binding=require` cannot work with \"host:5432\": its certificate's signature algorithm gives no channel binding hash",
        "tls-server-end-point needs a hash from the certificate's signature algorithm; Ed25519 and similar have none",
        "reissue the server certificate with an RSA or ECDSA signature (SHA-256/384/512), or drop `channel_binding=require`";
    ChannelBindingCleartext = "channel-binding-cleartext", Authentication, false,
        "`channel_binding=require` failed at \"host:5432\": the server asked for a cleartext password",
        "a cleartext password request cannot be bound to the channel; Neon's proxy asks for one when it got no endpoint ID (no SNI)",
        "connect by host name (not an IP address) so SNI is sent, or add `options=endpoint%3D<endpoint-id>`";
    DatabaseMissing = "database-missing", Server, false,
        "the database does not exist at \"host:5432\": ...",
        "the database name in the URL path or `dbname` is wrong",
        "check the database name (the path of the URL, or `dbname`)";
    PasswordMissing = "password-missing", Authentication, false,
        "the server \"host:5432\" asks for a password for user \"alex\", and none was given",
        "no password came from the connection string, `PGPASSWORD` or the password file",
        "put the password in the connection string (`postgresql://user:PASSWORD@host/db`, percent-encoded), in `PGPASSWORD`, or in `~/.pgpass`";
    TargetSessionAttrsUnmatched = "target-session-attrs-unmatched", Server, false,
        "no server matched `target_session_attrs=...`: db1:5432 is ..., db2:5432 is ... / no server matched `target_session_attrs=...` (after 3 attempts in 1.5s): db1:5432 failed (network), db2:5432 is ... / the server \"host:5432\" is ..., and `target_session_attrs=...` asks for ...",
        "no host is the kind of server `target_session_attrs` asks for (a standby where a primary is wanted, or the reverse); retried within `connect_timeout` only when some host could not be reached (a failover may be in progress)",
        "check the host list and `target_session_attrs`; during a failover, retry once the new primary is promoted";
    ProtocolViolation = "protocol-violation", Server, false,
        "the server \"host:5432\" sent a message that is not valid PostgreSQL protocol during ...",
        "an invalid message length or an unexpected message: not a PostgreSQL server, or a broken proxy in between",
        "check that host and port point at PostgreSQL (or a pooler that speaks its protocol), not another service";
    TooManyConnections = "too-many-connections", Server, true,
        "the server \"host:5432\" has too many connections: ...",
        "max_connections is reached",
        "lower the pool size, close idle connections, or use a pooled (-pooler) endpoint";
    RoleConnectionLimit = "role-connection-limit", Server, true,
        "the server \"host:5432\" refused user \"alex\": too many connections for role \"alex\"",
        "the role's own CONNECTION LIMIT is reached (other clients of the same user hold the slots)",
        "lower `pool_size` (summed over every process using this user), or raise the limit (`ALTER ROLE alex CONNECTION LIMIT n`)";
    ServerStarting = "server-starting", Server, true,
        "the server \"host:5432\" is starting up or shutting down: ...",
        "SQLSTATE 57P03: try again in a moment",
        "wait a moment and try again";
    ServerTerminated = "server-terminated", Closed, true,
        "the server \"host:5432\" terminated the connection: ...",
        "SQLSTATE 57P01/57P02: a restart, an administrator, or Neon's scale-to-zero ended the session",
        "the server restarted or an administrator (or Neon's scale-to-zero) ended the session; reconnect";
    ServerOther = "server-other", Server, false,
        "the server \"host:5432\" refused the connection: ... (SQLSTATE ...)",
        "the server's own message says why",
        "see the server's message";
    NeonEndpointNotSpecified = "neon-endpoint-not-specified", Server, false,
        "Neon could not tell which endpoint \"host:5432\" is for: no SNI was sent: the host is an IP address, `hostaddr` was given without a name, or `sslsni=0` / Neon could not tell which endpoint \"host:5432\" is for: no SNI reached its proxy",
        "Neon's proxy finds the endpoint from the TLS server name (SNI); an IP address host, `hostaddr` without `host`, or `sslsni=0` sends none",
        "connect with the endpoint's host name (ep-....neon.tech) so SNI is sent, or add `options=endpoint%3D<endpoint-id>` (the first label of the host name, without -pooler)";
    NeonEndpointDisabled = "neon-endpoint-disabled", Server, false,
        "the Neon endpoint at \"host:5432\" is disabled",
        "the compute endpoint was disabled in the console or by the API",
        "enable the endpoint in the Neon console (or via the API), then reconnect";
    NeonEndpointNotFound = "neon-endpoint-not-found", Server, false,
        "no Neon endpoint exists for \"host:5432\"",
        "the endpoint ID in the host name does not exist (deleted, or a typo)",
        "copy the connection string again from the Neon console: the endpoint in the host name does not exist";
    NeonQuota = "neon-quota", Server, false,
        "the Neon endpoint at \"host:5432\" is temporarily unavailable (quota or maintenance)",
        "a compute-time or data-transfer quota is used up, or the project is under maintenance",
        "check your project's quotas and status in the Neon console, or contact Neon support";
    NeonComputeUnreachable = "neon-compute-unreachable", Server, true,
        "Neon's proxy could not reach the compute for \"host:5432\"",
        "the compute is waking from scale-to-zero or restarting; the proxy already retried for a few seconds",
        "retry in a few seconds (neon-connect retries within `connect_timeout`); raise `connect_timeout` for slow cold starts";
    NeonRateLimited = "neon-rate-limited", Server, true,
        "Neon's proxy is limiting connection attempts to \"host:5432\"",
        "too many connection attempts at once (or too many connections) to this endpoint",
        "open fewer connections at once (a smaller pool, or the -pooler endpoint) and retry with backoff";
    NeonIpNotAllowed = "neon-ip-not-allowed", Authentication, false,
        "Neon refused this machine's IP address for \"host:5432\"",
        "the project's IP allowlist does not include this machine's address",
        "add this machine's IP address (IPv4 or IPv6, whichever it uses) to the allowed list in the Neon console";
    NeonChannelBindingMismatch = "neon-channel-binding-mismatch", Authentication, false,
        "channel binding failed at \"host:5432\": the TLS channel the server saw is not the one we saw",
        "the certificate we verified is not the one the server presented: something terminated TLS in between (interception, or a TLS-inspecting proxy)",
        "treat this as a possible interception: check the network path (corporate TLS inspection, a proxy) before connecting without channel binding";
    NeonPoolerStartupParameter = "neon-pooler-startup-parameter", Server, false,
        "the pooled endpoint \"host:5432\" refused a startup parameter: ...",
        "PgBouncer in transaction mode (Neon's -pooler hosts) accepts only a few startup parameters",
        "remove `options` (set it with SQL per transaction instead), or use the direct host (without -pooler)";
    NeonInsecure = "neon-insecure", TlsRefused, false,
        "the server at \"host:5432\" says the connection is insecure",
        "Neon's proxy refuses connections without TLS (\"connection is insecure (try using `sslmode=require`)\")",
        "neon-connect always uses TLS over TCP; if you see this, something between you and Neon stripped TLS";
    NeonControlPlane = "neon-control-plane", Server, true,
        "Neon's control plane did not answer for \"host:5432\": Control plane request failed / Neon's control plane did not answer for \"host:5432\": error communicating with the server: early eof",
        "Neon's proxy could not get the endpoint's details or wake it (a transient failure on Neon's side)",
        "retry in a few seconds (neon-connect retries within `connect_timeout`); if it persists, check Neon's status page";
    NeonEndpointOptionMismatch = "neon-endpoint-option-mismatch", ConnectionString, false,
        "the endpoint in `options=endpoint=...` does not match the host \"host:5432\"",
        "Neon's proxy saw one endpoint in the TLS server name (SNI) and another in the `endpoint=` option",
        "remove `endpoint=` from `options` (the host name already names the endpoint), or make it the first label of the host name";
    NeonBlockedNetwork = "neon-blocked-network", Authentication, false,
        "Neon refused \"host:5432\": this connection comes from a blocked network",
        "the endpoint only accepts connections from allowed networks (private networking, VPC endpoint restrictions)",
        "connect from an allowed network, or change the project's network settings in the Neon console";
    PoolTimeout = "pool-timeout", Pool, true,
        "timed out after 15.0s waiting for a free connection: all 10 connections of the pool are in use (3 waiting)",
        "every connection was checked out for the whole wait",
        "return connections sooner (drop clients after each request and avoid holding them across slow work), raise `pool_size`, or raise `wait_timeout`";
    PingTimeout = "ping-timeout", Timeout, true,
        "`pool.ping()` timed out after 2.0s: the server did not answer an empty query on \"host:5432\"",
        "a connection was checked out but the server (or the network path to it) did not answer within the check deadline",
        "check the server's load and the network path; the deadline is `recycle_timeout`";
    QueryConnectionLost = "query-connection-lost", Closed, true,
        "the connection was lost during the query: ... / terminating connection due to administrator command (SQLSTATE 57P01 admin_shutdown)",
        "the server closed the connection, or the network cut it, before the statement's result arrived (a restart, a failover, an administrator, an idle cut-off)",
        "run the statement again on a fresh connection (`pool.get()` gives one); a write outside a transaction may or may not have been applied";
    QuerySerializationFailure = "query-serialization-failure", Query, true,
        "could not serialize access due to concurrent update (SQLSTATE 40001 serialization_failure)",
        "a concurrent transaction changed what this one read (REPEATABLE READ or SERIALIZABLE)",
        "retry the whole transaction from its start";
    QueryDeadlock = "query-deadlock", Query, true,
        "deadlock detected (SQLSTATE 40P01 deadlock_detected); detail: Process 123 waits for ShareLock on transaction 456; blocked by process 789. ...",
        "two transactions waited for each other's locks; the server aborted this one",
        "retry the whole transaction; take locks in the same order everywhere to make it rarer";
    QueryStatementTimeout = "query-statement-timeout", Timeout, false,
        "canceling statement due to statement timeout (SQLSTATE 57014 query_canceled)",
        "the statement ran longer than the server's `statement_timeout`",
        "make the statement faster (an index, a smaller batch), or raise `statement_timeout` for it (`SET LOCAL statement_timeout = '30s'` inside its transaction)";
    QueryTimeout = "query-timeout", Timeout, false,
        "canceling statement due to the client-side query_timeout of 1.0s: no answer came in time (...) (SQLSTATE 57014 query_canceled)",
        "no answer arrived within `Options::query_timeout`: a slow statement, or a path to the server that stopped carrying packets; the statement was cancelled and the connection retired",
        "run it again (a fresh connection is taken); if the statement is just slow, make it faster or raise `query_timeout`";
    QueryCanceled = "query-canceled", Query, false,
        "canceling statement due to user request (SQLSTATE 57014 query_canceled)",
        "a cancel request stopped the statement (an abandoned query, `pg_cancel_backend`, a client-side deadline)",
        "nothing is wrong with the statement: it was stopped on purpose; run it again if it is still wanted";
    QueryConstraintViolation = "query-constraint-violation", Query, false,
        "duplicate key value violates unique constraint \"users_pkey\" (SQLSTATE 23505 unique_violation) / null value in column \"email\" of relation \"users\" violates not-null constraint (SQLSTATE 23502 not_null_violation)",
        "the statement would break a constraint (unique, foreign key, not null, check, exclusion)",
        "change the data (the detail names the row), or handle the conflict (`ON CONFLICT ...`)";
    QuerySyntax = "query-syntax", Query, false,
        "syntax error at or near \"FORM\" (SQLSTATE 42601 syntax_error); at character 10 of the statement",
        "the SQL text does not parse",
        "fix the SQL near the position given (characters count from 1)";
    QueryUndefinedObject = "query-undefined-object", Query, false,
        "relation \"userz\" does not exist (SQLSTATE 42P01 undefined_table) / column \"nope\" does not exist (SQLSTATE 42703 undefined_column)",
        "the statement names a table, column, function or type that does not exist (or is not on the `search_path`)",
        "check the name and the schema (`search_path`), and that migrations ran on this database";
    QueryPermissionDenied = "query-permission-denied", Query, false,
        "permission denied for table ... (SQLSTATE 42501 insufficient_privilege)",
        "the role lacks a privilege the statement needs",
        "grant the privilege to the role (`GRANT ... ON ... TO ...`), or connect as a role that has it";
    QueryReadOnly = "query-read-only", Query, true,
        "cannot execute INSERT in a read-only transaction (SQLSTATE 25006 read_only_sql_transaction)",
        "the server is a standby (or a demoted primary), or the transaction is read-only",
        "write through the primary: use `target_session_attrs=read-write` with every host, so the pool finds the writable one";
    QueryPreparedStatementMissing = "query-prepared-statement-missing", Query, false,
        "prepared statement \"s11\" does not exist (SQLSTATE 26000 invalid_sql_statement_name)",
        "a pooler in transaction mode (PgBouncer, Neon -pooler) ran the statement on another server session than the one it was prepared on",
        "use `query_typed` (one round trip, no named statement), run the statements inside a transaction, or use the direct (non-pooler) endpoint";
    QueryDataError = "query-data", Query, false,
        "invalid input syntax for type integer: \"x\" (SQLSTATE 22P02 invalid_text_representation)",
        "a value does not fit its type (bad input syntax, out of range, division by zero)",
        "check the values passed to the statement";
    QueryServerError = "query-server-error", Query, false,
        "the statement failed: ... (SQLSTATE ...)",
        "the server's own message says why",
        "see the server's message, detail and hint";
    QueryClientError = "query-client-error", Query, false,
        "the query failed: error deserializing column 0: ...",
        "a value could not be converted between Rust and PostgreSQL types (a parameter, or a column read with the wrong type), or the result had an unexpected shape",
        "match the Rust type to the column's type (e.g. `i64` for `int8`, `Option<T>` for NULLs)";
];

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// Every diagnosis as a Markdown table: id, what you see, what it means, the fix, and whether
/// it is retried (the README's troubleshooting section is this table; a test keeps them equal).
#[cfg(test)]
pub(crate) fn troubleshooting_table() -> String {
    let mut out = String::from(
        "| diagnosis (`Error::diagnosis()`) | what you see | what it means | the fix (the `help:` line) | retried |\n|---|---|---|---|---|\n",
    );
    for d in Diagnosis::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            d.id(),
            d.shows().replace('|', "\\|"),
            d.meaning().replace('|', "\\|"),
            d.help().replace('|', "\\|"),
            if d.is_retryable() { "yes" } else { "no" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_troubleshooting_table_matches_the_catalogue() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&troubleshooting_table()),
            "README's troubleshooting table is out of date; paste:\n{}",
            troubleshooting_table()
        );
    }

    #[test]
    fn ids_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for d in Diagnosis::ALL {
            assert!(seen.insert(d.id()), "duplicate id {}", d.id());
            assert!(
                d.id()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                d.id()
            );
        }
    }
}
