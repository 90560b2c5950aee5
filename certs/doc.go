// Package certs builds the TLS configurations sealpost uses and loads the
// certificates and CA bundles behind them.
//
// The client side (ClientConfig) is for talking to the upstream smarthost:
// it always verifies the chain and the host name and never goes below TLS
// 1.2; there is deliberately no option to skip verification. The server
// side (Reloader, ServerConfig) serves the listener's certificate through
// GetCertificate so that a SIGHUP can swap it without dropping connections.
//
// CA and SelfSigned mint throwaway certificates for tests and for
// `sealpost demo`; they are not meant to run a real PKI.
//
// The package uses the standard library only, so policy, spool and relay can
// share it without pulling in SMTP code.
package certs
