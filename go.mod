module sealpost

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/emersion/go-msgauth v0.7.0
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6
	github.com/emersion/go-smtp v0.25.1
	github.com/lmittmann/tint v1.2.1
	golang.org/x/time v0.16.0
)

require golang.org/x/crypto v0.31.0 // indirect
