package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/banger-dev/banger/internal/api"
)

// Kernels and images.

// ListImages lists installed images.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	err := c.do(ctx, http.MethodGet, api.PathImages, nil, &out)
	return out, err
}

// GetImage describes one installed image, with its manifest.
func (c *Client) GetImage(ctx context.Context, name string) (api.Image, error) {
	var out api.Image
	err := c.do(ctx, http.MethodGet, api.PathImage+url.PathEscape(name), nil, &out)
	return out, err
}

// DeleteImage deletes an image with all its versions; the daemon refuses while VMs use it.
func (c *Client) DeleteImage(ctx context.Context, name string) (api.Image, error) {
	var out api.Image
	err := c.do(ctx, http.MethodDelete, api.PathImage+url.PathEscape(name), nil, &out)
	return out, err
}

// BuildImage builds an image from its recipe as its new version.
func (c *Client) BuildImage(ctx context.Context, name string, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, api.PathImage+url.PathEscape(name)+"/build", nil, onEvent)
}

// PullImage pulls an image: a catalog name or an OCI reference.
func (c *Client) PullImage(ctx context.Context, req api.ImagePullRequest, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, api.PathImagePull, req, onEvent)
}

// RegisterImage adopts a host ext4 file (absolute path) as an image.
func (c *Client) RegisterImage(ctx context.Context, req api.ImageRegisterRequest, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, api.PathImageRegister, req, onEvent)
}

// ImportImage installs an image bundle file (absolute path).
func (c *Client) ImportImage(ctx context.Context, req api.ImageImportRequest, onEvent func(api.Event)) (api.Image, error) {
	return c.imageOp(ctx, api.PathImageImport, req, onEvent)
}

func (c *Client) imageOp(ctx context.Context, path string, body any, onEvent func(api.Event)) (api.Image, error) {
	res, err := c.stream(ctx, http.MethodPost, path, body, onEvent)
	if err != nil {
		return api.Image{}, err
	}
	if res.Image == nil {
		return api.Image{}, fmt.Errorf("daemon finished %s but sent no image", path)
	}
	return *res.Image, nil
}

// ExportImage writes an image ("name" or "name@version") as a bundle file (absolute path).
func (c *Client) ExportImage(ctx context.Context, name, path string, onEvent func(api.Event)) (api.Bundle, error) {
	return c.bundleOp(ctx, api.PathImage+url.PathEscape(name)+"/export", path, onEvent)
}

// ExportKernel writes a kernel as a bundle file (absolute path).
func (c *Client) ExportKernel(ctx context.Context, name, path string, onEvent func(api.Event)) (api.Bundle, error) {
	return c.bundleOp(ctx, api.PathKernel+url.PathEscape(name)+"/export", path, onEvent)
}

func (c *Client) bundleOp(ctx context.Context, path, out string, onEvent func(api.Event)) (api.Bundle, error) {
	res, err := c.stream(ctx, http.MethodPost, path, api.ExportRequest{Path: out}, onEvent)
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
	err := c.do(ctx, http.MethodPost, api.PathImageCache, api.PruneRequest{DryRun: dryRun}, &out)
	return out, err
}

// Catalog lists the images and kernels that can be had by name.
func (c *Client) Catalog(ctx context.Context) (api.Catalog, error) {
	var out api.Catalog
	err := c.do(ctx, http.MethodGet, api.PathCatalog, nil, &out)
	return out, err
}

// ListKernels lists installed kernels.
func (c *Client) ListKernels(ctx context.Context) ([]api.Kernel, error) {
	var out []api.Kernel
	err := c.do(ctx, http.MethodGet, api.PathKernels, nil, &out)
	return out, err
}

// GetKernel describes one installed kernel.
func (c *Client) GetKernel(ctx context.Context, name string) (api.Kernel, error) {
	var out api.Kernel
	err := c.do(ctx, http.MethodGet, api.PathKernel+url.PathEscape(name), nil, &out)
	return out, err
}

// DeleteKernel removes a kernel; the daemon refuses while VMs use it.
func (c *Client) DeleteKernel(ctx context.Context, name string) (api.Kernel, error) {
	var out api.Kernel
	err := c.do(ctx, http.MethodDelete, api.PathKernel+url.PathEscape(name), nil, &out)
	return out, err
}

// PullKernel pulls a kernel by catalog name.
func (c *Client) PullKernel(ctx context.Context, name string, onEvent func(api.Event)) (api.Kernel, error) {
	return c.kernelOp(ctx, api.PathKernel+url.PathEscape(name)+"/pull", nil, onEvent)
}

// ImportKernel adopts a locally built kernel (absolute paths).
func (c *Client) ImportKernel(ctx context.Context, req api.KernelImportRequest, onEvent func(api.Event)) (api.Kernel, error) {
	return c.kernelOp(ctx, api.PathKernelImport, req, onEvent)
}

func (c *Client) kernelOp(ctx context.Context, path string, body any, onEvent func(api.Event)) (api.Kernel, error) {
	res, err := c.stream(ctx, http.MethodPost, path, body, onEvent)
	if err != nil {
		return api.Kernel{}, err
	}
	if res.Kernel == nil {
		return api.Kernel{}, fmt.Errorf("daemon finished %s but sent no kernel", path)
	}
	return *res.Kernel, nil
}
