package mover

import (
	"fmt"
	"log/slog"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/keeper"
	"github.com/vipd/vipd/mover/awsmover"
	"github.com/vipd/vipd/mover/execmover"
)

// Factory returns the keeper's MoverFactory: each group's mover as its
// config says (nil for none).
func Factory(log *slog.Logger) keeper.MoverFactory {
	return func(g config.Group) (keeper.Mover, error) {
		switch g.Mover.Type {
		case "":
			return nil, nil
		case "exec":
			return execmover.New(g.Mover.Command, log.With("group", g.Name)), nil
		case "aws":
			return awsmover.Dial(g.Mover.AWS), nil
		}
		return nil, fmt.Errorf("mover: group %s: unknown mover type %q", g.Name, g.Mover.Type)
	}
}
