package examples_test

import (
	"fmt"

	"github.com/tapstack/tapstack/sockets"
	"github.com/tapstack/tapstack/sockets/examples"
	"github.com/tapstack/tapstack/stack"
)

// A stack with only its loopback is enough to run the fragments.
func loopbackStack() *stack.Stack {
	st, err := stack.New(stack.Config{})
	if err != nil {
		panic(err)
	}
	return st
}

func ExampleOpenTCPAndUDP() {
	st := loopbackStack()
	defer st.Close()
	tcp, udp, err := examples.OpenTCPAndUDP(st)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tcp.Close()
	defer udp.Close()
	fmt.Println(tcp.Family(), tcp.Type(), tcp.Proto())
	fmt.Println(udp.Family(), udp.Type(), udp.Proto())
	// Output:
	// AF_INET SOCK_STREAM 6
	// AF_INET SOCK_DGRAM 17
}

func ExampleServeOnce() {
	st := loopbackStack()
	defer st.Close()
	ready := make(chan struct{})
	done := make(chan string)
	go func() {
		req, peer, err := examples.ServeOnce(st, 8000, "HTTP/1.0 200 OK\r\n\r\nhello", func() { close(ready) })
		done <- fmt.Sprintf("server got %q from %s (err %v)", req, peer.Host, err)
	}()
	<-ready
	reply, err := examples.HTTPGet(st, examples.Addresses().Localhost)
	fmt.Printf("client got %q (err %v)\n", reply, err)
	fmt.Println(<-done)
	// Output:
	// client got "HTTP/1.0 200 OK\r\n\r\nhello" (err <nil>)
	// server got "GET / HTTP/1.0\r\n\r\n" from 127.0.0.1 (err <nil>)
}

func ExampleReceiveDatagram() {
	st := loopbackStack()
	defer st.Close()
	ready := make(chan struct{})
	go func() {
		<-ready
		examples.SendDatagram(st, sockets.Addr{Host: "127.0.0.1", Port: 9999}, []byte("hi"))
	}()
	data, from, err := examples.ReceiveDatagram(st, 9999, func() { close(ready) })
	fmt.Printf("%q from %s, err %v\n", data, from.Host, err)
	// Output:
	// "hi" from 127.0.0.1, err <nil>
}

func ExampleAddresses() {
	fmt.Println(examples.Addresses().Server, examples.Addresses().Any, examples.Addresses().Localhost, examples.Addresses().Broadcast)
	// Output:
	// 192.168.1.50:80 0.0.0.0:8000 127.0.0.1:8000 255.255.255.255:9999
}
