package client

import (
	"context"
	"fmt"

	"github.com/banger-dev/banger/internal/api"
)

// Kernels and images.

// ListImages lists installed images.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	err := c.do(ctx, to(api.RouteListImages), nil, &out)
	return out, err
}

// GetImage describes one installed image, with its manifest.
func (c *Client) GetImage(ctx context.Context, name string) (api.Image, error) {
	var out api.Image
	err := c.do(ctx, to(api.RouteShowImage, name), nil, &out)
	return out, err
}

// DeleteImage deletes an image with all its versions; the daemon refuses while VMs use it.
func (c *Client) DeleteImage(ctx context.Context, name string) (api.Image, error) {
	var out api.Image
	err := c.do(ctx, to(api.RouteDeleteImage, name), nil, &out)
	return out, err
}

// BuildImage builds an image from its recipe as its new version.
func (c *Client) BuildImage(ctx context.Context, name string, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, to(api.RouteBuildImage, name), nil, onEvent)
}

// PullImage pulls an image: a catalog name or an OCI reference.
func (c *Client) PullImage(ctx context.Context, req api.ImagePullRequest, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, to(api.RoutePullImage), req, onEvent)
}

// RegisterImage adopts a host ext4 file (absolute path) as an image.
func (c *Client) RegisterImage(ctx context.Context, req api.ImageRegisterRequest, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, to(api.RouteRegisterImage), req, onEvent)
}

// ImportImage installs an image bundle file (absolute path).
func (c *Client) ImportImage(ctx context.Context, req api.ImageImportRequest, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, to(api.RouteImportImage), req, onEvent)
}

func (c *Client) imageOp(ctx context.Context, t target, body any, onEvent func(api.Event)) (api.Image, error) {
	res, err := c.stream(ctx, t, body, onEvent)
	if err != nil {
		return api.Image{}, err
	}
	if res.Image == nil {
		return api.Image{}, fmt.Errorf("daemon finished %s but sent no image", t.path)
	}
	return *res.Image, nil
}

// ExportImage writes an image ("name" or "name@version") as a bundle file (absolute path).
func (c *Client) ExportImage(ctx context.Context, name, path string, onEvent func(api.Event)) (api.Bundle, error) {
	return c.bundleOp(ctx, to(api.RouteExportImage, name), path, onEvent)
}

// ExportKernel writes a kernel as a bundle file (absolute path).
func (c *Client) ExportKernel(ctx context.Context, name, path string, onEvent func(api.Event)) (api.Bundle, error) {
	return c.bundleOp(ctx, to(api.RouteExportKernel, name), path, onEvent)
}

func (c *Client) bundleOp(ctx context.Context, t target, out string, onEvent func(api.Event)) (api.Bundle, error) {
	res, err := c.stream(ctx, t, api.ExportRequest{Path: out}, onEvent)
	if err != nil {
		return api.Bundle{}, err
	}
	if res.Bundle == nil {
		return api.Bundle{}, fmt.Errorf("daemon finished the export but sent no bundle")
	}
	return *res.Bundle, nil
}

// PruneImageCache frees unused layer blobs, downloaded bundles and unused image versions.
func (c *Client) PruneImageCache(ctx context.Context, dryRun bool) (api.PruneResult, error) {
	var out api.PruneResult
	err := c.do(ctx, to(api.RoutePruneImageCache), api.PruneRequest{DryRun: dryRun}, &out)
	return out, err
}

// Catalog lists the images and kernels that can be had by name.
func (c *Client) Catalog(ctx context.Context) (api.Catalog, error) {
	var out api.Catalog
	err := c.do(ctx, to(api.RouteCatalog), nil, &out)
	return out, err
}

// ListKernels lists installed kernels.
func (c *Client) ListKernels(ctx context.Context) ([]api.Kernel, error) {
	var out []api.Kernel
	err := c.do(ctx, to(api.RouteListKernels), nil, &out)
	return out, err
}

// GetKernel describes one installed kernel.
func (c *Client) GetKernel(ctx context.Context, name string) (api.Kernel, error) {
	var out api.Kernel
	err := c.do(ctx, to(api.RouteShowKernel, name), nil, &out)
	return out, err
}

// DeleteKernel removes a kernel; the daemon refuses while VMs use it.
func (c *Client) DeleteKernel(ctx context.Context, name string) (api.Kernel, error) {
	var out api.Kernel
	err := c.do(ctx, to(api.RouteDeleteKernel, name), nil, &out)
	return out, err
}

// PullKernel pulls a kernel by catalog name.
func (c *Client) PullKernel(ctx context.Context, name string, onEvent func(api.Event)) (api.Kernel, error) {
	return c.kernelOp(ctx, to(api.RoutePullKernel, name), nil, onEvent)
}

// ImportKernel adopts a locally built kernel (absolute paths).
func (c *Client) ImportKernel(ctx context.Context, req api.KernelImportRequest, onEvent func(api.Event)) (api.Kernel, error) {
	return c.kernelOp(ctx, to(api.RouteImportKernel), req, onEvent)
}

func (c *Client) kernelOp(ctx context.Context, t target, body any, onEvent func(api.Event)) (api.Kernel, error) {
	res, err := c.stream(ctx, t, body, onEvent)
	if err != nil {
		return api.Kernel{}, err
	}
	if res.Kernel == nil {
		return api.Kernel{}, fmt.Errorf("daemon finished %s but sent no kernel", t.path)
	}
	return *res.Kernel, nil
}
