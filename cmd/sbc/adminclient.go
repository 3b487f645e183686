package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sbc-project/sbc/sbc"
)

// The admin API client of the CLI verbs (block, api): the address, and
// the credentials: an API key (-api-key-file, or $SBC_API_KEY) and/or a
// client certificate (-cert, -cert-key), with the CA of the SBC's admin
// certificate (-cacert) for HTTPS.

const adminFlagsUsage = `
ADDR is the running SBC's admin listener: host:port (plain HTTP, default
127.0.0.1:9090), or a URL (https://host:port for [admin.tls]).
Credentials: an API key from $SBC_API_KEY or -api-key-file FILE (its
first line), and/or a client certificate (-cert FILE -cert-key FILE, with
-cacert FILE for the SBC's CA). "sbc admin key create" makes a key.
`

// adminClient is the flags of an admin API client.
type adminClient struct {
	addr, keyFile, cacert, cert, certKey *string
}

func addAdminFlags(fs *flag.FlagSet) *adminClient {
	return &adminClient{
		addr:    fs.String("admin", "127.0.0.1:9090", "admin listener of the running SBC: host:port (HTTP) or URL"),
		keyFile: fs.String("api-key-file", "", "file holding the API key (default: $SBC_API_KEY)"),
		cacert:  fs.String("cacert", os.Getenv("SBC_ADMIN_CACERT"), "CA bundle of the admin listener's certificate (HTTPS; default $SBC_ADMIN_CACERT)"),
		cert:    fs.String("cert", os.Getenv("SBC_ADMIN_CERT"), "client certificate (PEM) for mutual TLS (default $SBC_ADMIN_CERT)"),
		certKey: fs.String("cert-key", os.Getenv("SBC_ADMIN_CERT_KEY"), "key of -cert (default $SBC_ADMIN_CERT_KEY)"),
	}
}

// base is the API's base URL.
func (a *adminClient) base() string {
	s := strings.TrimSuffix(*a.addr, "/")
	if strings.Contains(s, "://") {
		return s
	}
	return "http://" + s
}

// key is the API key to send ("" for none).
func (a *adminClient) key() (string, error) {
	if *a.keyFile != "" {
		b, err := os.ReadFile(*a.keyFile)
		if err != nil {
			return "", err
		}
		line, _, _ := strings.Cut(string(b), "\n")
		return strings.TrimSpace(line), nil
	}
	return strings.TrimSpace(os.Getenv("SBC_API_KEY")), nil
}

func (a *adminClient) client() (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if *a.cacert != "" {
		b, err := os.ReadFile(*a.cacert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", *a.cacert)
		}
		tc.RootCAs = pool
	}
	if (*a.cert == "") != (*a.certKey == "") {
		return nil, errors.New("-cert and -cert-key go together")
	}
	if *a.cert != "" {
		c, err := tls.LoadX509KeyPair(*a.cert, *a.certKey)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, nil
}

// do sends a request to the API (body: JSON, or nil) and returns the
// answer; a status other than 2xx is an error with the API's message.
func (a *adminClient) do(method, path string, body any) ([]byte, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	key, err := a.key()
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			rd = strings.NewReader(string(b))
		default:
			j, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			rd = strings.NewReader(string(j))
		}
	}
	req, err := http.NewRequest(method, a.base()+path, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(b))
		var ae sbc.APIError
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			msg = ae.Error
		}
		if res.StatusCode == http.StatusUnauthorized && key == "" && *a.cert == "" {
			msg += " (set $SBC_API_KEY, or see \"sbc admin key create\")"
		}
		return b, fmt.Errorf("%s: %s", res.Status, msg)
	}
	return b, nil
}
