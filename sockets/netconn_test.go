package sockets_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/tapstack/tapstack/sockets"
)

func TestConnPassesNettest(t *testing.T) {
	p := newPair(t, 0)
	ln, err := sockets.Listen(p.a, "tcp", ":9100")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			c, err := ln.Accept()
			ch <- res{c, err}
		}()
		c1, err = sockets.Dial(context.Background(), p.b, "tcp", "10.0.9.1:9100")
		if err != nil {
			return nil, nil, nil, err
		}
		r := <-ch
		if r.err != nil {
			c1.Close()
			return nil, nil, nil, r.err
		}
		return c1, r.c, func() { c1.Close(); r.c.Close() }, nil
	})
}

func TestDialListenErrors(t *testing.T) {
	p := newPair(t, 0)
	_, err := sockets.Dial(context.Background(), p.b, "tcp", "10.0.9.1:1")
	var ne net.Error
	if !errors.As(err, &ne) || !errors.Is(err, errSyscallECONNREFUSED) {
		t.Fatalf("Dial to a closed port: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = sockets.Dial(ctx, p.b, "tcp4", "10.0.9.99:80") // nobody there
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial cancelled by its context: %v", err)
	}
	if _, err := sockets.Dial(context.Background(), p.b, "sctp", "10.0.9.1:1"); err == nil {
		t.Fatal("Dial sctp accepted")
	}
	if _, err := sockets.Dial(context.Background(), p.b, "tcp", "no-port"); err == nil {
		t.Fatal("Dial without a port accepted")
	}
	if _, err := sockets.Listen(p.a, "udp", ":1"); err == nil {
		t.Fatal("Listen udp accepted")
	}
	ln, err := sockets.Listen(p.a, "tcp4", "10.0.9.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

func TestPacketConn(t *testing.T) {
	p := newPair(t, 0)
	srv, err := sockets.ListenPacket(p.a, "udp", ":9200")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := sockets.Dial(context.Background(), p.b, "udp6", "[fd09::1]:9200")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	buf := make([]byte, 100)
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("ReadFrom = %q %v", buf[:n], err)
	}
	if _, err := srv.WriteTo([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err = c.Read(buf)
	if err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Read = %q %v", buf[:n], err)
	}
	srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := srv.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom past its deadline: %v", err)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tapstack.test"},
		DNSNames: []string{"tapstack.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLSOverTheAdapter(t *testing.T) {
	p := newPair(t, 0)
	cert := selfSigned(t)
	ln, err := sockets.Listen(p.a, "tcp", ":9443")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	defer tl.Close()
	go func() {
		c, err := tl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	raw, err := sockets.Dial(context.Background(), p.b, "tcp", "[fd09::1]:9443")
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "tapstack.test"})
	defer c.Close()
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatal("TLS echo differs")
	}
	if c.ConnectionState().HandshakeComplete != true {
		t.Fatal("no handshake")
	}
}
