// Package config owns vipd's configuration file: the YAML schema, its
// defaults, and validation whose errors name the offending key and value.
//
// Decoding is strict (unknown keys are errors). Zero values mean "use the
// default" except where a field documents otherwise; Default returns a
// Config with every default filled in, and Load = decode + defaults +
// Validate.
package config
